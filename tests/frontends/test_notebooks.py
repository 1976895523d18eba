"""The notebook layer: the dashboard's buttons driven without a browser, and the quickstart notebook run.

The dashboard tests click real ``ipywidgets`` buttons against the real Kafka and Redis, then check
both what the widgets say and what the queue did, so a button that "works" by only changing a label
is caught. The quickstart notebook runs under nbval in a subprocess (its own pytest and kernel), with
the services this session found, so it is checked exactly as a student would run it top to bottom.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import matplotlib.pyplot as plt
import pytest
from kafka import KafkaAdminClient

from tests.conftest import ROOT
from yadtq import Client, Pool, TaskStatus
from yadtq.core.config import Config
from yadtq.core.ops import MAX_FACTORIAL
from yadtq.frontends.dashboard import CLOSED, dashboard, heartbeat_timeline, parse_args, timeline_frame

pytestmark = pytest.mark.services

NOTEBOOK = ROOT / "notebooks" / "01-quickstart.ipynb"
LAB_NOTEBOOK = ROOT / "notebooks" / "03-load-experiments.ipynb"
DELIVERY_NOTEBOOK = ROOT / "notebooks" / "04-delivery-semantics.ipynb"
DETECTION_NOTEBOOK = ROOT / "notebooks" / "05-failure-detection.ipynb"


#: States of a worker that is up and heartbeating; "idle (no partition)" is one that Kafka has not
#: (yet) given a partition. The dashboard only has to show the workers it started, so it waits for
#: these rather than for a settled consumer group (conftest.live_workers does that).
UP = ("idle", "busy", "idle (no partition)")


def wait_for_workers(client: Client, pool: Pool, n: int, wait_for: Callable[..., object], timeout: float = 60) -> None:
    """Wait until ``n`` workers heartbeat; a timeout says what they said (worker table, log tails)."""
    try:
        wait_for(lambda: client.workers()["state"].isin(UP).sum() >= n, timeout=timeout, what=f"{n} workers up")
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name}\n" + p.log_path.read_text()[-1500:] for p in pool.processes.values())
        raise AssertionError(f"{exc}\n{client.workers().to_string()}\n{logs}") from None


def test_parse_args_accepts_json_lists_only() -> None:
    assert parse_args("[2, 3]") == [2, 3]
    assert parse_args(' [[1, 2.5], "x"] ') == [[1, 2.5], "x"]
    assert parse_args("") == []
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_args("[1")
    with pytest.raises(ValueError, match="JSON list"):
        parse_args("5")


def test_dashboard_starts_workers_submits_refuses_and_refreshes(client: Client, pool: Pool, wait_for) -> None:
    dash = dashboard(client, pool)
    assert "add" in dash.op.options and "factorial" in dash.op.options

    dash.count.value = 2
    dash.start_button.click()
    assert pool.alive() == ["worker-1", "worker-2"]
    wait_for_workers(client, pool, 2, wait_for)

    dash.op.value = "add"
    dash.args.value = "[2, 3]"
    dash.submit_button.click()
    handle = dash.last_task
    assert handle is not None, dash.message.value
    assert handle.id in dash.message.value
    wait_for(lambda: handle.status() is TaskStatus.SUCCESS, timeout=30, what="the submitted add to succeed")
    assert handle.result(timeout=1) == 5

    dash.args.value = "[1"
    dash.submit_button.click()
    assert "not valid JSON" in dash.message.value
    assert len(client.tasks()) == 1

    dash.op.value = "factorial"
    dash.args.value = "[100000]"
    dash.submit_button.click()
    assert f"between 0 and {MAX_FACTORIAL}" in dash.message.value
    assert "Traceback" not in dash.message.value
    assert len(client.tasks()) == 1
    assert dash.last_task is handle

    dash.refresh_button.click()
    (tasks,) = dash.tasks_out.outputs
    assert handle.id in tasks["data"]["text/plain"] and handle.id in tasks["data"]["text/html"]
    (workers,) = dash.workers_out.outputs
    assert "worker-1" in workers["data"]["text/plain"] and "worker-2" in workers["data"]["text/plain"]

    dash.stop_button.click()
    assert pool.alive() == ["worker-1"]
    assert "stopped worker-2" in dash.message.value


def test_start_button_refuses_a_silly_count(client: Client, pool: Pool) -> None:
    dash = dashboard(client, pool)
    dash.count.value = 0
    dash.start_button.click()
    assert "between 1 and" in dash.message.value
    assert pool.processes == {}
    dash.stop_button.click()
    assert "no live worker" in dash.message.value


def test_dashboard_says_when_no_worker_runs_and_refuses_to_act_once_closed(
    client: Client, pool: Pool, config: Config, wait_for
) -> None:
    dash = dashboard(client, pool)
    dash.submit_button.click()
    handle = dash.last_task
    assert handle is not None and handle.status() is TaskStatus.QUEUED
    assert dash.message.value.endswith(f"as task {handle.id}: queued; no worker is running (press Start Workers)")

    # the notebook's clean-up: close the dashboard, then delete the namespace
    dash.close()
    client.backend.purge()
    client.broker.delete_topics()
    for button in (dash.start_button, dash.stop_button, dash.submit_button, dash.refresh_button):
        assert button.disabled
        dash.message.value = ""
        button.click()
        assert dash.message.value == CLOSED
    assert pool.processes == {} and client.backend.count_tasks() == 0
    admin = KafkaAdminClient(**config.kafka_options())
    try:  # deletion settles in a moment; a recreated topic would stay
        wait_for(lambda: config.task_topic not in admin.list_topics(), timeout=30, what="the topic to stay deleted")
    finally:
        admin.close()


def test_heartbeat_timeline_has_one_row_per_worker(client: Client, pool: Pool, wait_for) -> None:
    plt.switch_backend("Agg")
    ax = heartbeat_timeline(client)  # nothing yet: an empty, labelled plot rather than an error
    assert ax.texts and ax.texts[0].get_text() == "no heartbeats yet"
    plt.close(ax.figure)

    pool.start(2)
    wait_for_workers(client, pool, 2, wait_for)
    busy_for = 2.5 * client.config.heartbeat_interval  # long enough for a busy beat or two
    client.submit("sleep", busy_for).result(timeout=30)
    pool.stop("worker-2")

    beats = timeline_frame(client)
    assert set(beats["worker"]) == {"worker-1", "worker-2"}
    assert {"idle", "busy", "stopped"} <= set(beats["state"])
    assert beats.groupby("worker")["row"].nunique().eq(1).all()

    ax = heartbeat_timeline(client)
    try:
        assert [label.get_text() for label in ax.get_yticklabels()] == ["worker-1", "worker-2"]
        assert len(ax.get_yticks()) == 2
        assert {text.get_text() for text in ax.get_legend().get_texts()} >= {"idle", "busy", "stopped"}
    finally:
        plt.close(ax.figure)


@pytest.mark.timeout(360)
def test_quickstart_notebook_runs_under_nbval(base_config: Config) -> None:
    # A subprocess for now: nbval needs its own pytest collection of the .ipynb file, and running it
    # here keeps the main test command unchanged (`pytest` collects only tests/).
    env = {
        **os.environ,
        "YADTQ_KAFKA_BOOTSTRAP": base_config.kafka_bootstrap,
        "YADTQ_REDIS_URL": base_config.redis_url,
    }
    env.pop("YADTQ_NAMESPACE", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",  # this interpreter's kernel, whatever `python3` kernelspec is installed
        "--nbval-cell-timeout=120",
        str(NOTEBOOK),
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nbval failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def run_strict_nbval(base_config: Config, notebook: object, budget: float) -> float:
    """Run ``notebook`` under strict nbval in a subprocess with the services this session found;
    returns how long it took. Deterministic cells (specs, formulas, simulations, the checks a lesson
    makes) have their stored outputs compared; cells with measured figures are tagged
    nbval-ignore-output."""
    env = {
        **os.environ,
        "YADTQ_KAFKA_BOOTSTRAP": base_config.kafka_bootstrap,
        "YADTQ_REDIS_URL": base_config.redis_url,
    }
    env.pop("YADTQ_NAMESPACE", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        "--nbval-current-env",
        "--nbval-cell-timeout=150",
        str(notebook),
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget + 60)
    took = time.monotonic() - started
    assert proc.returncode == 0, f"nbval failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    return took


@pytest.mark.timeout(360)
def test_load_experiments_notebook_runs_under_strict_nbval(base_config: Config) -> None:
    run_strict_nbval(base_config, LAB_NOTEBOOK, budget=270)


@pytest.mark.timeout(300)
def test_delivery_semantics_notebook_runs_under_strict_nbval_within_three_minutes(base_config: Config) -> None:
    assert run_strict_nbval(base_config, DELIVERY_NOTEBOOK, budget=230) < 180


@pytest.mark.timeout(300)
def test_failure_detection_notebook_runs_under_strict_nbval_within_three_minutes(base_config: Config) -> None:
    assert run_strict_nbval(base_config, DETECTION_NOTEBOOK, budget=230) < 180
