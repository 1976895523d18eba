"""What a new user notices at the terminal, on the real Kafka and Redis: task id prefixes, unknown ids,
sleeps that cannot fit their time limit, failed steps in the history, and the worker table.

No worker process is needed: tasks submitted here stay queued, and worker records and task outcomes
are written through the same Redis scripts the workers use (as in test_state_machine.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from tests.conftest import cli
from yadtq import AmbiguousTask, BadArguments, Client, TaskStatus, UnknownTask
from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend

pytestmark = pytest.mark.services

ID_COMMANDS = ("status", "history", "result", "cancel")


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command, after checking its exit code."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def record(backend: Backend, task_id: str) -> None:
    """A queued task with a chosen id, recorded in Redis only (nothing to run it)."""
    assert backend.submit(TaskMessage(op="add", args=[1, 2], id=task_id))


def beat_at(backend: Backend, monkeypatch: pytest.MonkeyPatch, at: float, name: str, state: str) -> None:
    """A heartbeat written by the real script, as if sent at Unix time ``at``."""
    with monkeypatch.context() as patch:
        patch.setattr("yadtq.store.backend.time", SimpleNamespace(time=lambda: at))
        backend.heartbeat(name, state, "", 1, "host", "0" if state in ("idle", "busy") else "", at)


# --- task ids ----------------------------------------------------------------------------------------
def test_every_id_command_takes_a_unique_prefix(config: Config, client: Client) -> None:
    handle = client.submit("add", 2, 3)
    prefix = handle.id[:8]
    assert client.resolve(prefix) == handle.id
    status = cli(config, "status", prefix)
    assert (status.returncode, status.stdout.split()[0]) == (0, "queued")
    history = cli(config, "history", prefix)
    assert history.returncode == 0 and "queued" in history.stdout
    waited = cli(config, "result", prefix, "--timeout", "0.2")
    assert f"task {handle.id} is still queued" in one_line_error(waited, code=4)
    assert cli(config, "cancel", prefix).stdout.strip() == "cancelled"
    assert handle.status() is TaskStatus.CANCELLED


def test_an_ambiguous_prefix_is_one_line_listing_the_matches(config: Config, client: Client) -> None:
    for task_id in ("feed0001", "feed0002", "beef0001"):
        record(client.backend, task_id)
    for command in ID_COMMANDS:
        line = one_line_error(cli(config, command, "feed"))
        assert line == "yadtq: 'feed' matches 2 tasks: feed0001, feed0002; type more of the id", command
    assert client.resolve("feed0002") == "feed0002"
    assert client.resolve("bee") == "beef0001"
    assert client.status("feed0001") is TaskStatus.QUEUED, "a refused cancel changed nothing"


def test_glob_characters_in_a_prefix_match_only_themselves(client: Client) -> None:
    for task_id in ("x*1", "xa1", "x?2", "x[3]", "y\\4"):
        record(client.backend, task_id)
    assert client.resolve("x*") == "x*1"
    assert client.resolve("x?") == "x?2"
    assert client.resolve("x[") == "x[3]"
    assert client.resolve("y\\") == "y\\4"
    with pytest.raises(AmbiguousTask, match="matches 4 tasks"):
        client.resolve("x")
    with pytest.raises(UnknownTask, match="no task with an id starting 'x\\*a'"):
        client.resolve("x*a")
    for bad in ("", "é", "a\nb", "f" * 65):
        with pytest.raises(UnknownTask, match="is not a task id"):
            client.resolve(bad)


def test_an_id_with_no_record_is_bad_input_at_once(config: Config, client: Client) -> None:
    status = cli(config, "status", "0ddba11")
    assert status.stdout.strip() == "unknown"
    assert one_line_error(status) == "yadtq: no task with an id starting '0ddba11' (never submitted, or expired)"
    started = time.monotonic()
    assert "no task" in one_line_error(cli(config, "result", "0ddba11", "--timeout", "60"))
    assert time.monotonic() - started < 30, "result waited for a task that does not exist"
    for command in ("history", "cancel"):
        assert "no task" in one_line_error(cli(config, command, "0ddba11"))
    started = time.monotonic()
    with pytest.raises(UnknownTask, match="no task with id '0ddba11'"):
        client.result("0ddba11", timeout=60)
    assert time.monotonic() - started < 5


# --- submitting ----------------------------------------------------------------------------------------
def test_a_sleep_longer_than_its_time_limit_is_refused_at_submit(config: Config, client: Client) -> None:
    refused = cli(config, "submit", "sleep", "400")
    assert one_line_error(refused) == (
        "yadtq: sleep: seconds=400 does not fit the time limit of 300s; ask for a longer time_limit (--time-limit)"
    )
    assert "time limit of 5s" in one_line_error(cli(config, "submit", "sleep", "10", "--time-limit", "5"))
    with pytest.raises(BadArguments, match="time limit of 5s"):
        client.submit_with("sleep", [10], time_limit=5)
    assert client.backend.count_tasks() == 0
    accepted = cli(config, "submit", "sleep", "10", "--time-limit", "20")
    assert accepted.returncode == 0 and client.status(accepted.stdout.strip()) is TaskStatus.QUEUED


def test_submit_says_when_no_worker_is_running(make_config: Callable[..., Config]) -> None:
    config = make_config(heartbeat_timeout=60)  # the stand-in worker below stays live while the CLI starts
    with Client(config) as client:
        assert "No worker is running" in cli(config, "workers").stdout
        alone = cli(config, "submit", "add", "1", "2")
        assert alone.returncode == 0 and client.status(alone.stdout.strip()) is TaskStatus.QUEUED
        assert alone.stderr.strip() == "yadtq: queued; no worker is running (start one with `yadtq worker`)"
        client.backend.heartbeat("w1", "idle", "", 1, "host", "0", time.time())
        assert client.live_workers() == 1
        helped = cli(config, "submit", "add", "1", "2")
        assert (helped.returncode, helped.stderr) == (0, "")


# --- history --------------------------------------------------------------------------------------------
def test_history_shows_the_error_of_each_failed_step(config: Config, client: Client) -> None:
    backend = client.backend
    msg = TaskMessage(op="div", args=[1, 0], max_retries=1, retry_errors=True)
    backend.submit(msg)
    backend.heartbeat("w1", "busy", msg.id, 1, "host", "0", time.time())
    assert backend.claim(msg, "w1").attempt == 1
    assert backend.retry(msg.id, "w1", 1, 0.0, "OSError: disk on fire", "crashed")
    assert backend.claim(msg, "w1").attempt == 2
    error = "ZeroDivisionError: division by zero"
    assert backend.finish(msg.id, "w1", 2, TaskStatus.FAILED, error=error, reason="error")

    notes = [entry.get("note") for entry in client.history(msg.id)]
    assert notes[-3:] == ["OSError: disk on fire", None, "error: ZeroDivisionError: division by zero"]
    shown = cli(config, "history", msg.id[:8])
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert "retrying" in lines[3] and "OSError: disk on fire" in lines[3]
    assert "failed" in lines[-1] and "error: ZeroDivisionError: division by zero" in lines[-1]


# --- workers ---------------------------------------------------------------------------------------------
def test_workers_lists_live_ones_and_forgets_long_gone_ones(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(heartbeat_timeout=60, partitions=2)  # stand-in workers stay live while the CLI starts
    hour = config.worker_retention
    assert hour == 3600.0
    with Client(config) as client:
        backend, now = client.backend, time.time()
        beat_at(backend, monkeypatch, now - hour - 200, "dead-long-ago", "idle")
        with monkeypatch.context() as patch:  # declared dead (by a worker's reaper) over an hour ago
            patch.setattr("yadtq.store.backend.time", SimpleNamespace(time=lambda: now - hour - 100))
            backend.reap()
        beat_at(backend, monkeypatch, now - 120, "dead-now", "busy")
        backend.reap()  # declared dead just now
        beat_at(backend, monkeypatch, now - hour - 100, "stopped-long-ago", "stopped")
        beat_at(backend, monkeypatch, now - hour - 100, "silent-long-ago", "idle")  # nobody declared it dead
        beat_at(backend, monkeypatch, now - 10, "stopped-now", "stopped")
        beat_at(backend, monkeypatch, now, "live", "idle")

        live = cli(config, "workers")
        assert live.returncode == 0
        assert names_in(live.stdout) == {"live"}
        assert "stay idle" not in live.stdout, "one live worker fits in two partitions"
        every = cli(config, "workers", "--all")
        assert names_in(every.stdout) == {"live", "dead-now", "stopped-now"}
        for name in ("dead-long-ago", "stopped-long-ago", "silent-long-ago"):
            assert not backend.redis.exists(backend.keys.worker(name), backend.keys.beats(name))
            assert backend.redis.zscore(backend.keys.workers, name) is None
        assert len(client.heartbeats()) == 3 and client.live_workers() == 1

        for name in ("live-2", "live-3"):
            backend.heartbeat(name, "idle", "", 1, "host", "", time.time())
        crowded = cli(config, "workers")
        assert names_in(crowded.stdout) == {"live", "live-2", "live-3"}
        assert "the task topic has 2 partitions" in crowded.stdout


def names_in(table: str) -> set[str]:
    """The worker names of a `yadtq workers` table (first column, header and footers left out)."""
    rows = table.splitlines()[1:]
    return {row.split()[0] for row in rows if row.split() and not row[0].isupper()}
