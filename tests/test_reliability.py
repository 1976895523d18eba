"""What was accepted gets done: worker death, duplicates, long tasks, limits, retries, dead letters."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from kafka import KafkaProducer

from tests.conftest import cli, live_workers
from yadtq import BadArguments, Client, NotCancellable, TaskFailed, TaskStatus
from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.processes.pool import Pool
from yadtq.transport.broker import Broker

pytestmark = pytest.mark.services


@contextmanager
def raw_sender(config: Config) -> Iterator[Callable[[bytes], None]]:
    """Send bytes to the task topic as any Kafka client could."""
    Client(config).broker.ensure_topics()
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap, max_request_size=4 * 1024 * 1024)

    def send(value: bytes) -> None:
        producer.send(config.task_topic, value).get(timeout=10)

    try:
        yield send
    finally:
        producer.close()


@pytest.fixture
def raw(config: Config) -> Iterator[Callable[[bytes], None]]:
    with raw_sender(config) as send:
        yield send


def processing_on(client: Client, task_id: str) -> str | None:
    info = client.task(task_id)
    return info["worker"] if info and info["status"] == "processing" else None


def consumed(config: Config) -> int:
    """Messages of the task topic the workers acknowledged (share group) or committed (consumer group)."""
    return Broker(config).consumed()


# --- worker death ----------------------------------------------------------------------------------
def test_sigkilled_workers_task_finishes_elsewhere_within_5s_with_default_settings(make_config, tmp_path, wait_for):
    defaults = Config()
    config = make_config(heartbeat_interval=defaults.heartbeat_interval, heartbeat_timeout=defaults.heartbeat_timeout)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(2)
        wait_for(live_workers(client, 2), timeout=60, what="2 workers")
        handle = client.submit_with("square_after", [7, 1.0])
        victim = wait_for(lambda: processing_on(client, handle.id), timeout=30, what="the task to start")
        time.sleep(0.3)
        pool.kill(str(victim))
        killed_at = time.time()
        assert handle.result(timeout=30) == 49
        info = handle.info()
        assert info is not None
        assert info["finished_at"] - killed_at < 5.0, f"took {info['finished_at'] - killed_at:.2f}s"
        assert info["worker"] != victim
        assert info["attempts"] == 2
        notes = [h.get("note") or "" for h in handle.history()]
        assert any("requeued" in n or "took over" in n for n in notes), notes
        dead = client.workers().set_index("name").loc[str(victim)]
        assert dead["state"] == "dead"
        assert dead["lost"] == 1


@pytest.mark.parametrize("dispatch", ["shared", "partitioned"])
def test_a_duplicate_message_runs_the_task_once(make_config, tmp_path, wait_for, dispatch):
    config = make_config(dispatch=dispatch)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool, raw_sender(config) as raw:
        _a_duplicate_message_runs_the_task_once(client, pool, raw, wait_for, config)


def _a_duplicate_message_runs_the_task_once(client: Client, pool: Pool, raw, wait_for, config: Config) -> None:
    msg = TaskMessage(op="square_after", args=[5, 0.2])
    for _ in range(4):
        raw(msg.encode())
    pool.start(2)
    # Sent without a record (as any Kafka producer may): unknown until a worker claims it.
    wait_for(lambda: client.task(msg.id), timeout=60, what="a worker to pick the task up")
    assert client.result(msg.id, timeout=60) == 25
    wait_for(lambda: consumed(config) >= 4, timeout=30, what="all four copies to be consumed")
    history = client.handle(msg.id).history()
    assert [h["status"] for h in history].count("processing") == 1
    assert client.task(msg.id)["attempts"] == 1  # type: ignore[index]
    # and once more, long after it finished
    raw(msg.encode())
    wait_for(lambda: consumed(config) >= 5, timeout=30, what="the late copy to be consumed")
    assert client.handle(msg.id).history() == history


@pytest.mark.parametrize("shed_after", [0.0, 2.0], ids=["keeps-partitions", "sheds-partitions"])
def test_a_task_longer_than_max_poll_interval_keeps_its_worker(make_config, tmp_path, wait_for, shed_after):
    """The task runs once however long it takes. Without shedding the group does not change at all;
    with it, the busy worker hands its partitions over and gets a share back once it is free. (A
    consumer group's concern; with a share group the lock is renewed: ``test_shared_dispatch.py``.)"""
    config = make_config(max_poll_interval=2.0, shed_after=shed_after, dispatch="partitioned")
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(2)
        wait_for(live_workers(client, 2), timeout=60, what="2 workers")
        time.sleep(1.0)  # let the group settle
        before = client.workers().set_index("name")[["partitions", "rebalances"]].to_dict()
        handle = client.submit("sleep", 6.0)
        assert handle.result(timeout=60) == 6.0
        assert handle.info()["attempts"] == 1  # type: ignore[index]
        assert [h["status"] for h in handle.history()] == ["queued", "processing", "success"]
        if not shed_after:
            time.sleep(config.heartbeat_interval * 2)  # the next heartbeat carries the counters
            assert client.workers().set_index("name")[["partitions", "rebalances"]].to_dict() == before
        else:
            runner = handle.info()["worker"]  # type: ignore[index]
            wait_for(
                lambda: client.workers().set_index("name")["rebalances"][runner] >= before["rebalances"][runner] + 2,
                timeout=20,
                what="the busy worker to shed its partitions and ask for them again",
            )
            wait_for(live_workers(client, 2), timeout=20, what="both workers to own partitions again")


def test_sigterm_finishes_a_short_task_and_hands_back_a_long_one(make_config, tmp_path, wait_for):
    config = make_config(shutdown_grace=1.5)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        (first,) = pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker")
        short = client.submit("square_after", 3, 0.5)
        wait_for(lambda: processing_on(client, short.id), timeout=30, what="the short task to start")
        assert pool.stop(first.name) == 0
        assert short.status() is TaskStatus.SUCCESS and short.info()["worker"] == first.name  # type: ignore[index]

        (second,) = pool.start(1)
        long = client.submit("square_after", 4, 6.0)
        wait_for(lambda: processing_on(client, long.id), timeout=60, what="the long task to start")
        assert pool.stop(second.name) == 0
        assert long.status() is TaskStatus.QUEUED
        assert "handed back" in (long.history()[-1].get("note") or "")
        pool.start(1)
        assert long.result(timeout=60) == 16
        assert long.info()["attempts"] == 2  # type: ignore[index]


# --- limits and retries ----------------------------------------------------------------------------
def test_time_limit_stops_a_stuck_task_not_the_worker(client: Client, pool: Pool):
    (proc,) = pool.start(1)
    stuck = client.submit_with("hang", [60], time_limit=1)
    with pytest.raises(TaskFailed, match="TimeLimitExceeded"):
        stuck.result(timeout=60)
    assert stuck.info()["reason"] == "timeout"  # type: ignore[index]
    retried = client.submit_with("hang", [60], time_limit=0.5, retry_errors=True, max_retries=1)
    with pytest.raises(TaskFailed):
        retried.result(timeout=60)
    assert retried.info()["attempts"] == 2  # type: ignore[index]
    assert client.submit("add", 1, 2).result(timeout=30) == 3
    assert proc.alive


def test_a_crashing_executor_is_retried_with_backoff_then_fails(client: Client, pool: Pool):
    (proc,) = pool.start(1)
    handle = client.submit_with("crash", [3], max_retries=2)
    with pytest.raises(TaskFailed, match="ExecutorCrashed"):
        handle.result(timeout=60)
    info = handle.info()
    assert info is not None and info["attempts"] == 3 and info["reason"] == "crashed"
    statuses = [h["status"] for h in handle.history()]
    assert statuses == ["queued", "processing", "retrying", "processing", "retrying", "processing", "failed"]
    starts = [h["at"] for h in handle.history() if h["status"] == "processing"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # retry_backoff * 2**(attempt-1)
    assert proc.alive


def test_operation_errors_are_final_unless_retry_is_asked(client: Client, pool: Pool):
    pool.start(1)
    final = client.submit("fail_with", "boom")
    with pytest.raises(TaskFailed, match="OperationError: boom"):
        final.result(timeout=60)
    assert final.info()["attempts"] == 1  # type: ignore[index]
    again = client.submit_with("fail_with", ["boom"], retry_errors=True, max_retries=2)
    with pytest.raises(TaskFailed):
        again.result(timeout=60)
    assert again.info()["attempts"] == 3  # type: ignore[index]
    assert "retrying" in [h["status"] for h in again.history()]


# --- dead letters ------------------------------------------------------------------------------------
def test_malformed_messages_are_dead_lettered_and_good_ones_still_run(config: Config, client: Client, pool: Pool, raw):
    (proc,) = pool.start(1)
    bad = {
        b"this is not json": "not JSON",
        json.dumps({"v": 99, "id": "a", "op": "add", "args": [1, 2], "kwargs": {}}).encode(): "schema version",
        json.dumps({"v": 1, "op": "add", "args": [1, 2], "kwargs": {}}).encode(): "missing field 'id'",
        json.dumps({"v": 1, "id": "u1", "op": "nope", "args": [], "kwargs": {}}).encode(): "unknown operation",
        json.dumps({"v": 1, "id": "t1", "op": "add", "args": ["x", 2], "kwargs": {}}).encode(): "must be a number",
        json.dumps({"v": 1, "id": "big", "op": "sum", "args": [[1] * 40_000], "kwargs": {}}).encode(): "oversized",
    }
    for value in bad:
        raw(value)
    good = client.submit("add", 20, 22)
    assert good.result(timeout=60) == 42
    letters = client.dead_letters()
    while len(letters) < len(bad):  # the good task may land on a partition read first
        time.sleep(0.1)
        letters = client.dead_letters()
    reasons = " | ".join(letters["reason"])
    for needle in bad.values():
        assert needle in reasons
    assert client.status("u1") is TaskStatus.FAILED
    assert "rejected: unknown operation" in client.task("u1")["error"]  # type: ignore[index]
    assert client.status("t1") is TaskStatus.FAILED
    assert proc.alive
    listing = cli(config, "dlq").stdout
    assert "not JSON" in listing and "unknown operation" in listing


def test_bad_api_input_is_refused_and_nothing_is_sent(client: Client):
    with pytest.raises(BadArguments, match="JSON"):
        client.submit("add", float("nan"), 1)
    with pytest.raises(BadArguments, match="JSON"):
        client.submit("add", object(), 1)
    with pytest.raises(BadArguments, match="max_retries"):
        client.submit_with("add", [1, 2], max_retries=-1)
    with pytest.raises(BadArguments, match="time_limit"):
        client.submit_with("add", [1, 2], time_limit=0)
    with pytest.raises(BadArguments, match="bytes"):
        client.submit("sum", [1.5] * 20_000)
    assert client.backend.count_tasks() == 0


# --- cancellation ------------------------------------------------------------------------------------
def test_cancel_a_task_that_has_not_started(config: Config, client: Client, pool: Pool):
    doomed = client.submit("add", 1, 1)
    assert doomed.cancel() is TaskStatus.CANCELLED
    by_cli = client.submit("add", 3, 3)
    assert cli(config, "cancel", by_cli.id).stdout.strip() == "cancelled"
    assert cli(config, "cancel", by_cli.id).stdout.strip() == "cancelled", "cancelling twice is not an error"
    with pytest.raises(NotCancellable, match="unknown"):
        client.cancel("never-submitted")
    pool.start(1)
    survivor = client.submit("add", 2, 2)
    assert survivor.result(timeout=60) == 4
    with pytest.raises(TaskFailed, match="cancelled"):
        doomed.result(timeout=1)
    assert doomed.info()["attempts"] == 0  # type: ignore[index]
    with pytest.raises(NotCancellable, match="success"):
        survivor.cancel()
    refused = cli(config, "cancel", survivor.id)
    assert refused.returncode == 2 and "only queued or retrying tasks can be cancelled" in refused.stderr
