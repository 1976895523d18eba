"""The examples of the original design still run against the real services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from yadtq import Client
from yadtq.core.config import Config

pytestmark = pytest.mark.services


def run(config: Config, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, **config.to_env(), "PYTHONPATH": str(ROOT)}  # the workers import tests.ops_fixture
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )  # type: ignore[call-overload]


def test_producer_worker_and_query_examples(config: Config, client: Client, wait_for) -> None:
    worker = run(config, "examples/worker.py", "example-worker")
    producer = run(config, "examples/producer.py", "--wait")
    try:
        out, _ = producer.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        producer.kill()
        out, _ = producer.communicate(timeout=10)
    finally:
        if producer.returncode != 0:  # show what the worker did, too
            worker.send_signal(signal.SIGTERM)
            log, _ = worker.communicate(timeout=60)
            pytest.fail(f"producer exited {producer.returncode}:\n{out}\nworker log:\n{log}")
    assert "add(2, 3) = 5" in out and "div(1, 0) failed: ZeroDivisionError" in out
    try:
        query = run(config, "examples/query_tasks.py")
        table, _ = query.communicate(timeout=60)
        assert "fibonacci" in table and "example-worker" in table
        task_id = out.split()[0]
        one, _ = run(config, "examples/query_tasks.py", task_id).communicate(timeout=60)
        assert one.splitlines()[0] == "success" and "processing" in one
    finally:
        worker.send_signal(signal.SIGTERM)
        log, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, log
    assert "stopped after" in log
