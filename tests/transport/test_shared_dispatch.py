"""Shared dispatch (a Kafka share group) as workers use it: what a share group promises a task queue.

- any free worker takes the next task, whatever the others are running (no partition holds it);
- a task longer than the broker's lock keeps its record (the worker renews it) and runs once;
- a record the broker handed out ``max_deliveries`` times is dead-lettered with its count;
- on a broker without share groups, a worker says so in one line and consumes as a consumer group.

Executions are counted outside the state machine (``tests.ops_fixture.counted``).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import live_workers
from tests.ops_fixture import executions_key
from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.processes.pool import Pool
from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker
from yadtq.transport.sharegroup import RELEASE
from yadtq.worker.worker import Worker

pytestmark = [pytest.mark.services, pytest.mark.slow]


def executions(config: Config, token: str) -> int:
    return int(Backend(config).redis.scard(executions_key(config.namespace, token)))


def test_a_busy_worker_is_no_obstacle(
    make_config: Callable[..., Config], tmp_path: Any, wait_for: Callable[..., Any]
) -> None:
    """3 workers, one running a 60 s task; one idle worker SIGKILLed, two more joining: 10 short tasks
    submitted then all finish within 2 s. With a consumer group, a task whose partition belongs to the
    busy worker (or to the dead one, until the session timeout) would wait."""
    config = make_config()
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(3)
        wait_for(live_workers(client, 3), 30, "3 workers in the share group")
        long = client.submit_with("counted", [60.0, "long"])
        wait_for(lambda: client.status(long.id) == "processing", 15, "the long task to start")
        holder = client.task(long.id)["worker"]
        idle = next(name for name in pool.processes if name != holder)
        pool.kill(idle)
        pool.start(2)
        wait_for(live_workers(client, 4), 30, "two workers joining")
        started = time.monotonic()
        handles = [client.submit("add", i, i) for i in range(10)]
        results = [h.result(timeout=10) for h in handles]
        took = time.monotonic() - started
        assert results == [2 * i for i in range(10)]
        assert took < 2.0, f"10 short tasks took {took:.2f}s beside a busy and a dead worker"
        assert client.status(long.id) == "processing"  # still running: it held no short task back
        assert executions(config, "long") == 1


def test_a_task_longer_than_the_lock_keeps_its_record_and_runs_once(
    make_config: Callable[..., Config], tmp_path: Any, wait_for: Callable[..., Any]
) -> None:
    """The broker's lock is 15 s (its lowest); a 22 s task runs once while another worker polls the
    whole time: the lock was renewed, or the idle worker would have been handed the record."""
    config = make_config(share_lock=15.0, reaper=False)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(2)
        wait_for(live_workers(client, 2), 30, "2 workers in the share group")
        handle = client.submit_with("counted", [22.0, "long"])
        assert handle.result(timeout=60) == 1
        history = [entry["status"] for entry in client.history(handle.id)]
        assert executions(config, "long") == 1
        assert history.count("processing") == 1, history
        assert not client.dead_letters().shape[0]


def test_a_record_delivered_max_deliveries_times_is_dead_lettered(
    make_config: Callable[..., Config], tmp_path: Any, wait_for: Callable[..., Any]
) -> None:
    """A member of the worker's group takes the record and gives it back (a worker that dies holding
    it does the same, a lock later); with ``max_deliveries`` 2 the next delivery is the last."""
    config = make_config(max_deliveries=2)
    with Client(config) as client:
        handle = client.submit_with("counted", [0.0, "doomed"], wait=True)
        member = Broker(config).share_consumer("holder")
        try:
            assert member.wait_assigned(10)
            records: list[Any] = []
            deadline = time.monotonic() + 15
            while not records and time.monotonic() < deadline:
                records = member.poll(1, 0.5)
            assert len(records) == 1 and records[0].delivery_count == 1
            member.acknowledge(records[0].partition, records[0].offset, RELEASE)
            member.flush()
        finally:
            member.close()
        with Pool(config, log_dir=tmp_path) as pool:
            pool.start(1)
            wait_for(lambda: client.status(handle.id) == "failed", 30, "the task to be dead-lettered")
        letters = client.dead_letters()
        assert list(letters["task_id"]) == [handle.id]
        assert int(letters["deliveries"].iloc[0]) == 2
        assert "delivered 2 times" in letters["reason"].iloc[0]
        assert executions(config, "doomed") == 0


def test_a_broker_without_share_groups_gets_a_consumer_group(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ApiVersions decides: made to say "no share groups", the worker logs one line and runs the task
    through the consumer group."""
    monkeypatch.setattr("yadtq.transport.sharegroup.admin.has_share_groups", lambda _admin: False)
    config = make_config()
    with Client(config) as client:
        handle = client.submit("add", 2, 3)
        worker = Worker(config, name="old-broker")
        with caplog.at_level(logging.WARNING, logger="yadtq.worker.worker"):
            worker.run(max_tasks=1)
        assert worker.dispatch == "partitioned"
        assert handle.result(timeout=10) == 5
    lines = [r.getMessage() for r in caplog.records if "share groups" in r.getMessage()]
    assert len(lines) == 1 and "falling back to dispatch 'partitioned'" in lines[0]


def test_a_paused_worker_holds_nothing_the_others_need(
    make_config: Callable[..., Config], tmp_path: Any, wait_for: Callable[..., Any]
) -> None:
    """An idle worker stopped with SIGSTOP holds no record (it fetches only for free slots and had
    none in flight): tasks submitted while it is stopped all run on the other worker at once."""
    config = make_config()
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        first, _second = pool.start(2)
        wait_for(live_workers(client, 2), 30, "2 workers in the share group")
        pool.signal(first.name, signal.SIGSTOP)
        try:
            time.sleep(0.5)  # any fetch it had in flight is answered empty or times out
            started = time.monotonic()
            handles = [client.submit("add", i, 1) for i in range(5)]
            assert [h.result(timeout=10) for h in handles] == [i + 1 for i in range(5)]
            assert time.monotonic() - started < 5
        finally:
            pool.signal(first.name, signal.SIGCONT)
