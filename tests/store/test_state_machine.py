"""The state machine scripts on a real Redis, one transition at a time (no workers, no Kafka)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from yadtq import Client, ServiceUnavailable, TaskStatus
from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend

pytestmark = pytest.mark.services


@pytest.fixture
def backend(config: Config) -> Backend:
    return Backend(config)


def beat(backend: Backend, name: str, state: str = "idle") -> None:
    backend.heartbeat(name, state, "", 1, "host", "0", time.time())


def test_claim_is_exclusive_while_the_holder_heartbeats(backend: Backend) -> None:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "a")
    beat(backend, "b")
    first = backend.claim(msg, "a")
    assert (first.outcome, first.attempt) == ("claimed", 1)
    second = backend.claim(msg, "b")
    assert (second.outcome, second.detail) == ("busy", "a")
    assert backend.status(msg.id) is TaskStatus.PROCESSING


def test_only_the_holder_of_the_current_attempt_can_finish(backend: Backend) -> None:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "a")
    claim = backend.claim(msg, "a")
    assert not backend.finish(msg.id, "b", claim.attempt, TaskStatus.SUCCESS, 3)
    assert not backend.finish(msg.id, "a", claim.attempt + 1, TaskStatus.SUCCESS, 3)
    assert backend.finish(msg.id, "a", claim.attempt, TaskStatus.SUCCESS, 3)
    assert not backend.finish(msg.id, "a", claim.attempt, TaskStatus.SUCCESS, 4), "a result was written twice"
    assert backend.task(msg.id)["result"] == 3  # type: ignore[index]
    assert backend.claim(msg, "b").outcome == "done"


def test_a_silent_holder_is_taken_over_and_its_late_result_discarded(backend: Backend, config: Config) -> None:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    backend.heartbeat("ghost", "busy", msg.id, 1, "host", "0", time.time() - 60)
    backend.redis.zadd(backend.keys.workers, {"ghost": time.time() - 60})  # last beat a minute ago
    old = backend.claim(msg, "ghost")
    backend.redis.zadd(backend.keys.workers, {"ghost": time.time() - 60})
    beat(backend, "b")
    new = backend.claim(msg, "b")
    assert (new.outcome, new.attempt) == ("claimed", 2)
    assert not backend.finish(msg.id, "ghost", old.attempt, TaskStatus.SUCCESS, 3)
    assert backend.finish(msg.id, "b", new.attempt, TaskStatus.SUCCESS, 3)
    assert "took over from ghost" in backend.history(msg.id)[-2]["note"]


def test_the_reaper_requeues_a_dead_workers_task_once(backend: Backend, config: Config) -> None:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "victim", "busy")
    backend.claim(msg, "victim")
    backend.redis.zadd(backend.keys.workers, {"victim": time.time() - config.heartbeat_timeout - 1})
    assert [TaskMessage.decode(m).id for m in backend.reap()] == [msg.id]
    assert backend.reap() == []
    assert backend.status(msg.id) is TaskStatus.QUEUED
    assert backend.redis.hget(backend.keys.worker("victim"), "state") == "dead"
    assert "requeued" in backend.history(msg.id)[-1]["note"]


def test_a_heartbeat_timed_before_the_death_does_not_revive_the_worker(backend: Backend, config: Config) -> None:
    """Paused between reading its clock and sending its beat, a worker delivers, on waking, a beat
    older than its death. Recorded, that old time would look silent at once and the reaper would
    declare it dead a second time for one pause; instead the next, fresh beat revives it once."""

    def beat_timed(at: float) -> str:
        return backend._run("heartbeat", "victim", at, "idle", "", 1, "host", "0", config.heartbeat_history, at, 0)

    last = time.time() - config.heartbeat_timeout - 2
    beat_timed(last)  # its last beat before the pause
    backend.reap()
    record = backend.redis.hgetall(backend.keys.worker("victim"))
    assert record["state"] == "dead"
    assert beat_timed(last + 0.5) == "dead"  # timed during the pause, delivered after the death
    assert backend.redis.hgetall(backend.keys.worker("victim")) == record, "a stale beat changed the record"
    beat(backend, "victim")  # the first beat timed after the pause
    backend.reap()
    after = backend.redis.hgetall(backend.keys.worker("victim"))
    assert (after["state"], after["revived"], after["dead_at"]) == ("idle", "1", record["dead_at"])


def test_a_dead_worker_names_the_task_it_lost_even_if_no_heartbeat_listed_it(
    backend: Backend, config: Config, client: Client
) -> None:
    """Killed right after a claim, before its next heartbeat: the failure history still names the task."""
    from yadtq.monitoring.monitor import failures

    taken, over = TaskMessage(op="add", args=[1, 2]), TaskMessage(op="add", args=[3, 4])
    for msg in (taken, over):
        backend.submit(msg)
    beat(backend, "victim", "idle")  # its last heartbeat lists no task
    for msg in (taken, over):
        backend.claim(msg, "victim")
    backend.redis.zadd(backend.keys.workers, {"victim": time.time() - config.heartbeat_timeout - 1})
    assert [TaskMessage.decode(m).id for m in backend.reap()] in ([taken.id, over.id], [over.id, taken.id])
    beat(backend, "b")
    backend.finish(taken.id, "b", backend.claim(taken, "b").attempt, TaskStatus.SUCCESS, 3)
    history = failures(client).set_index("task")
    assert sorted(history.index) == sorted([taken.id, over.id])
    assert (history["worker"] == "victim").all()
    assert history.loc[taken.id, ["task_status", "finished_by", "attempts"]].tolist() == ["success", "b", 2]
    assert history.loc[over.id, "task_status"] == "queued"


def test_the_reaper_gives_up_on_a_task_that_kills_every_worker(backend: Backend, config: Config) -> None:
    msg = TaskMessage(op="add", args=[1, 2], max_retries=0)
    backend.submit(msg)
    beat(backend, "victim", "busy")
    backend.claim(msg, "victim")
    backend.redis.zadd(backend.keys.workers, {"victim": time.time() - config.heartbeat_timeout - 1})
    assert backend.reap() == []
    record = backend.task(msg.id)
    assert record is not None and record["status"] == "failed" and record["reason"] == "worker_lost"


def test_retry_schedules_and_due_retries_lease_the_message(backend: Backend) -> None:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "a")
    claim = backend.claim(msg, "a")
    assert backend.retry(msg.id, "a", claim.attempt, 0.0, "ExecutorCrashed", "crashed")
    assert backend.status(msg.id) is TaskStatus.RETRYING
    due = backend.due_retries(lease=30)
    assert [TaskMessage.decode(m).id for m in due] == [msg.id]
    assert backend.due_retries(lease=30) == [], "a leased retry was handed out twice"
    assert backend.claim(msg, "a").attempt == 2


def test_a_retry_that_fails_again_at_once_is_scheduled_again(backend: Backend) -> None:
    """The republish of a due retry and its next failure can interleave; the new schedule must survive."""
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "a")
    first = backend.claim(msg, "a")
    backend.retry(msg.id, "a", first.attempt, 0.0, "boom", "error")
    assert backend.due_retries(lease=60)  # handed out, leased
    second = backend.claim(msg, "a")  # claimed at once, fails at once
    backend.retry(msg.id, "a", second.attempt, 0.0, "boom", "error")
    assert [TaskMessage.decode(m).id for m in backend.due_retries(lease=60)] == [msg.id]


def test_cancel_only_before_the_start(backend: Backend) -> None:
    queued, started = TaskMessage(op="add", args=[1, 2]), TaskMessage(op="add", args=[3, 4])
    backend.submit(queued)
    backend.submit(started)
    beat(backend, "a")
    backend.claim(started, "a")
    assert backend.cancel(queued.id) == "cancelled"
    assert backend.cancel(started.id) == "processing"
    assert backend.cancel("nope") == "unknown"
    assert backend.claim(queued, "a").outcome == "done"


def test_a_message_from_another_producer_creates_its_record(backend: Backend) -> None:
    msg = TaskMessage(op="mul", args=[2, 3], id="external-1")
    claim = backend.claim(msg, "a")
    assert claim.outcome == "claimed"
    record = backend.task("external-1")
    assert record is not None and record["op"] == "mul" and record["args"] == [2, 3]
    assert [h["status"] for h in backend.history("external-1")] == ["queued", "processing"]


def test_every_transition_is_published_as_an_event(backend: Backend) -> None:
    pubsub = backend.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(backend.keys.events)
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, "a")
    claim = backend.claim(msg, "a")
    backend.finish(msg.id, "a", claim.attempt, TaskStatus.SUCCESS, 3)
    events = []
    deadline = time.monotonic() + 5
    while len(events) < 4 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            events.append(json.loads(message["data"]))
    pubsub.close()
    assert [(e["type"], e.get("status") or e.get("state")) for e in events] == [
        ("task", "queued"),
        ("heartbeat", "idle"),
        ("task", "processing"),
        ("task", "success"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_password_passes_through_config(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "s3cret",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        with_password = Backend(Config.from_env(env={}, redis_url=url, redis_password="s3cret", home=tmp_path))
        while True:
            try:
                with_password.ping()
                break
            except ServiceUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        without = Backend(Config.from_env(env={}, redis_url=url, home=tmp_path))
        with pytest.raises(ServiceUnavailable, match="uthentication"):
            without.ping()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_task_index_drops_ids_whose_records_expired(make_config) -> None:
    config = make_config(result_ttl=60)
    backend = Backend(config)
    old = [TaskMessage("add", [i, i], submitted_at=time.time() - 3600) for i in range(3)]
    new = TaskMessage("add", [1, 1])
    backend.record([*old, new])
    backend.redis.delete(backend.keys.task(old[0].id), backend.keys.task(old[1].id))  # as if expired
    assert backend.prune_index() == 2
    assert set(backend.redis.zrange(backend.keys.tasks, 0, -1)) == {old[2].id, new.id}
    assert backend.prune_index() == 0, "a live record was dropped from the index"


def test_batched_scripts_survive_redis_forgetting_them(make_config) -> None:
    """After a Redis restart its script cache is empty; a batch is sent again once, with no double effect."""
    backend = Backend(make_config())
    first, second = TaskMessage("add", [1, 1]), TaskMessage("add", [2, 2])
    backend.record([first])
    backend.redis.script_flush()
    backend.record([second])
    _, claims = backend.exchange("w", [], [first, second])
    assert [c.outcome for c in claims] == ["claimed", "claimed"]
    assert [c.attempt for c in claims] == [1, 1], "a claim ran twice"
