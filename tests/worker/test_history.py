"""History from the Kafka event log survives a Redis loss; per-task logs span workers and retries;
the worker hooks never block or raise when their sink is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from yadtq import Client, Pool, TaskStatus
from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend
from yadtq.worker.executor import Outcome
from yadtq.worker.history import EventLog
from yadtq.worker.logs import TaskLog, logs_key, task_logs

pytestmark = pytest.mark.services


def test_replay_rebuilds_tasks_and_workers_after_redis_is_purged_and_logs_span_attempts(
    client: Client, pool: Pool, wait_for: Callable[..., object]
) -> None:
    pool.start(2)
    handles = [client.submit("add", i, 1) for i in range(6)] + [client.submit("div", 1, 0)]
    for handle in handles:
        wait_for(lambda h=handle: h.status().terminal, timeout=60, what="every task to finish")
    time.sleep(0.5)  # a SIGKILL loses what a worker had not published yet: let the workers send it
    long = client.submit("sleep", 3)
    wait_for(lambda: long.status() is TaskStatus.PROCESSING, timeout=60, what="the sleep to start")
    victim = client.task(long.id)["worker"]
    time.sleep(0.5)  # likewise for the log line of its first attempt
    pool.kill(victim)
    assert long.result(timeout=60) == 3
    pool.close()

    # the task's log lines span both workers and both attempts
    lines = client.logs(long.id)
    assert lines[0]["worker"] == victim and lines[0]["message"].startswith("attempt 1 of sleep(3) started")
    later = [(line["worker"], line["message"]) for line in lines[1:]]
    assert any(w != victim and m.startswith("attempt 2 of sleep(3) started") for w, m in later), later
    assert any(w != victim and m.startswith("success after") and m.endswith("= 3") for w, m in later), later
    assert client.logs("no-such-task") == []  # the survivor stops: its last events are published before it exits
    expected = {h.id: h.status().value for h in [*handles, long]}

    client.backend.purge()  # everything Redis knew is gone
    assert client.task(long.id) is None

    replayed = client.replay()
    assert replayed.complete
    tasks = replayed.tasks.set_index("id")
    assert dict(tasks["status"]) == expected
    assert tasks.loc[long.id, "attempts"] == 2
    assert tasks.loc[long.id, "worker"] != victim
    assert tasks["submitted_at"].notna().all() and tasks["finished_at"].notna().all()
    assert (tasks["finished_at"] >= tasks["submitted_at"]).all()
    assert "ZeroDivisionError" in tasks.loc[handles[-1].id, "error"]
    workers = replayed.workers.set_index("name")
    assert workers.loc[victim, "state"] == "dead"
    survivor = ({"worker-1", "worker-2"} - {victim}).pop()
    assert workers.loc[survivor, "state"] == "stopped"
    assert set(replayed.beats["worker"]) == {"worker-1", "worker-2"}

    later = client.replay(since=time.time() + 60)  # nothing happened after that
    assert later.tasks.empty and later.events.empty


def test_task_log_keeps_each_tasks_newest_lines_in_order_with_its_ttl(make_config: Callable[..., Config]) -> None:
    """A batch holds lines of several tasks, interleaved; each task keeps its newest lines in order."""
    config = make_config(task_log_lines=3, result_ttl=600)
    sink = TaskLog(config)

    def lines(order: str, start: int) -> list[dict[str, object]]:
        return [
            {"task": t, "line": {"at": i, "worker": "w", "level": "INFO", "message": f"{t}{i}"}}
            for i, t in enumerate(order, start)
        ]

    try:
        sink.write(lines("ababaa", 0))  # a: 0 2 4 5 (one too many), b: 1 3
        sink.write(lines("bc", 6))
    finally:
        sink.close_sink()
    assert [line["message"] for line in task_logs(config, "a")] == ["a2", "a4", "a5"]
    assert [line["message"] for line in task_logs(config, "b")] == ["b1", "b3", "b6"]
    assert [line["message"] for line in task_logs(config, "c")] == ["c7"]
    backend = Backend(config)
    try:
        assert 590 <= backend.redis.ttl(logs_key(config.namespace, "a")) <= 600
    finally:
        backend.close()


def test_event_log_never_blocks_or_raises_when_kafka_is_down(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    hook = EventLog(config.replace(kafka_bootstrap="127.0.0.1:1"))  # nothing listens there
    worker = SimpleNamespace(name="w", state="busy", current=[])
    msg = TaskMessage(op="add", args=[1, 2])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="yadtq.worker.sink"):
        for _ in range(200):
            hook.task_claimed(worker, msg, 1)  # type: ignore[arg-type]
            hook.task_finished(worker, msg, "success", Outcome("ok", 3))  # type: ignore[arg-type]
        assert time.monotonic() - started < 0.5  # the calls only queue
        hook.drain(timeout=10)
    assert time.monotonic() - started < 15
    assert hook.written == 0
    assert any("event-log" in r.getMessage() for r in caplog.records)
