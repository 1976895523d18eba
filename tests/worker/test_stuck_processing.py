"""A ``processing`` task whose holder is alive but no longer runs it is requeued by the reaper.

This is the state a Redis crash can leave behind: the worker finished the task and Kafka has its
offset, but the write of the outcome was lost with the crash, so the record says ``processing`` by a
worker that is alive and heartbeating. Neither Kafka (the message is committed) nor the dead-worker
rule (the holder is alive) would ever bring it back. The script is driven with explicit clocks here;
``test_service_crashes.py`` shows the end-to-end recovery with real workers.
"""

from __future__ import annotations

import time

import pytest

from yadtq import TaskStatus
from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend

pytestmark = pytest.mark.services


@pytest.fixture
def backend(config: Config) -> Backend:
    return Backend(config)


def beat(backend: Backend, name: str, current: str, at: float) -> None:
    backend.heartbeat(name, "busy" if current else "idle", current, 1, "host", "0", at)
    backend.redis.zadd(backend.keys.workers, {name: at})  # the heartbeat as seen at time ``at``


def reap(backend: Backend, now: float) -> list[str]:
    ids = backend._run("reap", now, backend.config.heartbeat_timeout, backend.config.max_retries, 0)
    return [TaskMessage.decode(m).id for m in ids]


def held(backend: Backend, name: str, now: float) -> TaskMessage:
    msg = TaskMessage(op="add", args=[1, 2])
    backend.submit(msg)
    beat(backend, name, "", now)
    assert backend.claim(msg, name).outcome == "claimed"
    return msg


def test_a_task_its_live_holder_stopped_listing_is_requeued_after_the_timeout(backend: Backend) -> None:
    timeout, now = backend.config.heartbeat_timeout, time.time()
    msg = held(backend, "w", now)
    beat(backend, "w", "", now)  # alive, running nothing
    assert reap(backend, now) == [], "requeued on the first look: a heartbeat may just have missed the claim"
    beat(backend, "w", "", now + timeout - 0.05)
    assert reap(backend, now + timeout - 0.05) == [], "requeued before a whole timeout of beats had passed"
    beat(backend, "w", "", now + timeout + 0.2)
    assert reap(backend, now + timeout + 0.2) == [msg.id]
    assert backend.status(msg.id) is TaskStatus.QUEUED
    assert "is alive but has not listed it" in backend.history(msg.id)[-1]["note"]
    assert reap(backend, now + timeout + 0.3) == [], "requeued twice"
    assert backend.redis.hlen(f"{backend.ns}:unlisted") == 0, "a mark was left behind"
    # the holder's late result, if any, is refused; the next claim runs it again
    assert not backend.finish(msg.id, "w", 1, TaskStatus.SUCCESS, 3)
    assert backend.claim(msg, "w").attempt == 2


def test_a_task_its_holder_lists_is_never_requeued(backend: Backend) -> None:
    timeout, now = backend.config.heartbeat_timeout, time.time()
    msg = held(backend, "w", now)
    for step in range(8):
        at = now + step * timeout
        beat(backend, "w", f"other,{msg.id}", at)
        assert reap(backend, at) == []
    assert backend.status(msg.id) is TaskStatus.PROCESSING


def test_one_listing_clears_the_mark(backend: Backend) -> None:
    """A heartbeat written just before the claim misses the task once; the next one lists it."""
    timeout, now = backend.config.heartbeat_timeout, time.time()
    msg = held(backend, "w", now)
    beat(backend, "w", "", now)
    assert reap(backend, now) == []
    beat(backend, "w", msg.id, now + 0.5 * timeout)
    assert reap(backend, now + 0.5 * timeout) == []
    beat(backend, "w", "", now + 1.2 * timeout)
    assert reap(backend, now + 1.2 * timeout) == [], "an old mark survived a heartbeat that listed the task"
    assert backend.status(msg.id) is TaskStatus.PROCESSING


def test_a_mark_belongs_to_one_claim(backend: Backend) -> None:
    """A mark made for one attempt does not shorten the grace of the next claim of the same task."""
    timeout, now = backend.config.heartbeat_timeout, time.time()
    msg = held(backend, "w", now)
    beat(backend, "w", "", now)
    assert reap(backend, now) == []
    backend.release(msg.id, "w", 1, "handed back")  # the task leaves ``running``
    beat(backend, "v", "", now + 0.9 * timeout)
    assert backend.claim(msg, "v").attempt == 2
    beat(backend, "v", "", now + 1.1 * timeout)
    assert reap(backend, now + 1.1 * timeout) == [], "the first claim's mark was applied to the second"
    beat(backend, "v", "", now + 2.2 * timeout)
    assert reap(backend, now + 2.2 * timeout) == [msg.id]


def test_with_no_retries_left_it_fails_as_worker_lost(backend: Backend) -> None:
    timeout, now = backend.config.heartbeat_timeout, time.time()
    msg = TaskMessage(op="add", args=[1, 2], max_retries=0)
    backend.submit(msg)
    beat(backend, "w", "", now)
    backend.claim(msg, "w")
    assert reap(backend, now) == []
    beat(backend, "w", "", now + timeout + 0.1)
    assert reap(backend, now + timeout + 0.1) == []
    record = backend.task(msg.id)
    assert record is not None and (record["status"], record["reason"]) == ("failed", "worker_lost")


@pytest.mark.slow
def test_real_workers_rerun_a_task_whose_outcome_a_crash_lost(make_config, tmp_path) -> None:
    """End to end: a task finished and committed, whose record is then put back the way a Redis
    crash that lost the last second of its append-only file leaves it (``processing``, held by its
    live worker, the final history entry gone). Kafka will never deliver it again; the reaper must."""
    from tests.conftest import live_workers, record_figures
    from yadtq import Client
    from yadtq.lab.audit import audit, execution_counts
    from yadtq.processes.pool import Pool

    # a longer timeout than FAST's: on a loaded machine a late heartbeat must not make the holder
    # look dead, which would requeue the task by the other rule
    config = make_config(imports=("tests.ops_fixture", "yadtq.lab.probe"), heartbeat_timeout=4.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(2)
        deadline = time.monotonic() + 60
        while not live_workers(client, 2)() and time.monotonic() < deadline:
            time.sleep(0.1)
        handle = client.submit_with("lab.work", [0.1, "lost-write"], wait=True)
        assert handle.result(timeout=30) == 1
        holder = handle.info()["worker"]  # type: ignore[index]
        key = client.backend.keys.task(handle.id)
        # the crash: the FINISH write (status, result, its history entry, the running entry removal) is gone
        client.backend.redis.hset(key, mapping={"status": "processing", "result": "", "finished_at": ""})
        client.backend.redis.rpop(key + ":history")
        client.backend.redis.hset(f"{config.namespace}:running", handle.id, holder)
        lost_at = time.time()
        deadline = time.monotonic() + 30
        while client.task(handle.id)["status"] != "success" and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.1)
        info = handle.info()
        assert info is not None and info["status"] == "success", f"still {info and info['status']} after 30 s"
        took = info["finished_at"] - lost_at
        # marked at the first reap, taken back a timeout later, then claimed and run (0.1 s)
        bound = 2 * config.heartbeat_timeout + 2 * config.heartbeat_interval + 3.0
        record_figures("lost_outcome_rerun", {"rerun_finished_after_s": round(took, 2), "bound_s": bound})
        assert took < bound, f"rerun {took:.1f}s after the loss (bound {bound:.1f}s)"
        # Normally the reaper's live-holder rule brings it back ("is alive but has not listed it").
        # On a badly overloaded machine the holder's heartbeat can also fall behind, and then the
        # dead-holder rules (the reaper's or the claim's takeover of a redelivery) act first: the
        # property under test, that the task does not stay ``processing``, holds either way.
        notes = [h.get("note") or "" for h in handle.history()]
        rescued = [n for n in notes if "is alive but has not listed it" in n or "stopped heartbeating" in n]
        assert rescued, notes
        record_figures("lost_outcome_rerun_by", {"note": rescued[0]})
        report = audit(
            client.backend, [handle.id], executions=execution_counts(client.backend, {handle.id: "lost-write"})
        )
        assert (report.executions, report.results, report.lost, report.duplicates) == (2, 1, 0, 0), report
        assert handle.result(timeout=1) == 2
