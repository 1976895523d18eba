"""The monitoring commands as a user runs them: watch, logs, report, monitor, and their refusals."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import FAST, ROOT, cli
from yadtq import Client, Pool
from yadtq.core.config import Config
from yadtq.frontends.cli import main
from yadtq.frontends.standalone import free_port
from yadtq.transport.broker import Broker

pytestmark = pytest.mark.services


@contextmanager
def serving(config: Config, *args: str, wait: float) -> Iterator[str]:
    """Run ``yadtq ARGS`` (a command that serves until stopped) and yield the first line it prints;
    terminate it afterwards and wait up to ``wait`` seconds for it to exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "yadtq", *args],
        env={**os.environ, **config.to_env()},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=wait)


@pytest.fixture(scope="module")
def run(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, dict[str, str]]]:
    """One namespace for the whole module (workers take seconds to start): two workers that stay
    up, and a few finished tasks, one of them failed, by name. Cleaned up at the end."""
    config = base_config.replace(namespace=f"t{uuid.uuid4().hex[:10]}", **FAST)
    client = Client(config)
    pool = Pool(config, log_dir=tmp_path_factory.mktemp("workers"))
    try:
        pool.start(2)
        adds = [client.submit("add", i, 1) for i in range(4)]
        div = client.submit("div", 1, 0)
        deadline = time.monotonic() + 60
        while not all(h.status().terminal for h in [*adds, div]) or len(client.logs(div.id)) < 2:
            assert time.monotonic() < deadline, "the tasks did not finish in 60s"
            time.sleep(0.1)
        yield config, {"add": adds[0].id, "div": div.id}
    finally:
        pool.close()
        client.backend.purge()
        client.broker.delete_topics()
        client.close()


@pytest.fixture
def finished(run: tuple[Config, dict[str, str]]) -> dict[str, str]:
    return run[1]


@pytest.fixture
def ran(run: tuple[Config, dict[str, str]]) -> Config:
    return run[0]


def test_watch_once_and_for_a_while(ran: Config, finished: dict[str, str]) -> None:
    config = ran
    once = cli(config, "watch", "--once")
    assert once.returncode == 0, once.stderr
    assert "success 4  failed 1" in once.stdout
    assert "worker-1" in once.stdout and "worker-2" in once.stdout
    assert finished["div"] in once.stdout
    header = next(line.split() for line in once.stdout.splitlines() if line.split()[:1] == ["name"])
    shared = Broker(config).shared_dispatch()
    assert ("in_flight" in header and "max_delivery_count" in header) == shared, header

    timed = cli(config, "watch", "--duration", "2.5", "--interval", "0.5", timeout=30)
    assert timed.returncode == 0, timed.stderr
    frames = timed.stdout.count(f"yadtq {config.namespace}")
    assert 2 <= frames <= 2.5 / 0.5 + 1  # heartbeats keep coming: redrawn, but at most once per interval


def test_logs_of_a_failed_task_by_prefix(ran: Config, finished: dict[str, str]) -> None:
    config = ran
    proc = cli(config, "logs", finished["div"][:10])
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert "attempt 1 of div(1, 0) started" in first
    assert "WARNING" in second and "ZeroDivisionError: division by zero" in second


def test_report_is_one_self_contained_html_file(ran: Config, finished: dict[str, str], tmp_path: Path) -> None:
    config = ran
    out = tmp_path / "report.html"
    proc = cli(config, "report", "--since", "1h", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # by status and op, latency, throughput, timeline
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert not re.search(r'(src|href)="(https?:|/)', page)  # nothing to fetch from elsewhere
    assert "<td>add</td>" in page and "<td>div</td>" in page

    empty = tmp_path / "later.html"
    assert cli(config, "report", "--since", "2999-01-01T00:00:00", "-o", str(empty)).returncode == 0
    assert "0 tasks submitted since" in empty.read_text()


def test_metrics_describe_the_queue(ran: Config, finished: dict[str, str]) -> None:
    config = ran
    port = free_port()
    with serving(config, "monitor", "--metrics-port", str(port), "--duration", "20", wait=15) as first_line:
        assert first_line == f"metrics at http://127.0.0.1:{port}/metrics (Ctrl-C to stop)"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15).read().decode()
    assert 'yadtq_tasks{status="success"} 4.0' in text and 'yadtq_tasks{status="failed"} 1.0' in text
    assert "yadtq_queue_depth 0.0" in text
    assert 'yadtq_task_latency_seconds_bucket{le="+Inf"} 5.0' in text
    assert 'yadtq_workers{state="idle"} 2.0' in text
    topic_partitions = 1 if Broker(config).shared_dispatch() else config.partitions  # shared: one, read by all
    assert sum(line.startswith("yadtq_partition_lag{") for line in text.splitlines()) == topic_partitions


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["report", "--since", "yesterday"], "--since 'yesterday'"),
        (["report", "-o", "/no/such/dir/r.html"], "does not exist"),
        (["monitor", "--metrics-port", "0"], "is not a port"),
        (["watch", "--interval", "0"], "must be positive"),
        (["logs", "zzzz"], "no task with an id starting 'zzzz'"),
    ],
)
def test_mistakes_get_one_line(config: Config, args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--namespace", config.namespace, *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_a_taken_metrics_port_is_one_line(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--namespace", config.namespace, "monitor", "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1, err


def test_dashboard_command_serves_on_loopback_and_prints_the_url(config: Config) -> None:
    port = free_port()
    with serving(config, "dashboard", "--port", str(port), "--duration", "60", wait=40) as first_line:
        assert first_line == f"dashboard at http://127.0.0.1:{port}/ (Ctrl-C to stop)"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with pytest.raises(OSError):  # Voila went with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
