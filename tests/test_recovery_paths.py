"""Each recovery path alone, a paused worker, and a poison task, with real worker processes.

Every task here runs ``lab.work`` (or the poison ``kill_worker``), which counts its own executions
with a plain ``INCR`` outside the queue's state machine. The assertions about "ran once" or "ran
twice" use that count, never the queue's own records, which are what is under test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.conftest import live_workers, record_figures
from yadtq import Client
from yadtq.client.client import TaskHandle
from yadtq.core.config import Config
from yadtq.lab.audit import audit, execution_counts
from yadtq.lab.probe import exec_key
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]
#: The test operations and the execution-counting probe.
PROBE = ("tests.ops_fixture", "yadtq.lab.probe")


def holder(client: Client, task_id: str) -> str | None:
    info = client.task(task_id)
    return str(info["worker"]) if info and info["status"] == "processing" and info["worker"] else None


def owning(client: Client, n: int) -> Callable[[], bool]:
    """A condition: ``n`` live workers each own some partitions (so each can be republished to)."""

    def check() -> bool:
        frame = client.workers()
        live = frame[frame["state"].isin(["idle", "busy"]) & (frame["partitions"].astype(str) != "")]
        return bool(len(live) >= n)

    return check


def ran(client: Client, token: str) -> int:
    """How many times ``lab.work(..., token)`` has started, by its own count."""
    return int(client.backend.redis.get(exec_key(client.config.namespace, token)) or 0)


def started(client: Client, task_id: str, token: str, wait_for: Callable[..., object]) -> str:
    """Wait until the task is held by a worker *and* its execution has begun; the holder's name."""
    wait_for(lambda: ran(client, token) >= 1, timeout=30, what="the task to start executing")
    return str(wait_for(lambda: holder(client, task_id), timeout=10, what="the task's holder"))


def running_on_one_of_two(
    client: Client, pool: Pool, seconds: float, token: str, wait_for: Callable[..., object]
) -> tuple[TaskHandle, str]:
    """Start two workers, wait until both own partitions, submit ``lab.work(seconds, token)`` and
    wait until it runs; its handle, and the worker running it."""
    pool.start(2)
    # A join that kafka-python drops (docs/reliability.md) leaves a worker out until its safety net
    # rejoins it, two session timeouts later: 60 s with the reaper test's 30 s session.
    patience = max(60.0, 2 * client.config.session_timeout + 30.0)
    wait_for(owning(client, 2), timeout=patience, what="2 workers owning partitions")
    handle = client.submit_with("lab.work", [seconds, token], wait=True)
    return handle, started(client, handle.id, token, wait_for)


def notes(client: Client, task_id: str) -> list[str]:
    return [h.get("note") or "" for h in client.history(task_id)]


def finished_after(client: Client, task_id: str, since: float) -> float:
    info = client.task(task_id)
    assert info is not None and info["finished_at"]
    return float(info["finished_at"]) - since


def test_the_reaper_alone_requeues_a_killed_workers_task(make_config, tmp_path, wait_for) -> None:
    """Kafka's redelivery is made slow (a 30 s session timeout), so only the reaper can be this fast.
    A consumer group's: a share group gives a killed worker's records back the moment its connection
    closes, so the two paths cannot be told apart there (the next test covers that path)."""
    config = make_config(imports=PROBE, session_timeout=30.0, max_poll_interval=40.0, dispatch="partitioned")
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        handle, victim = running_on_one_of_two(client, pool, 1.0, "reaped", wait_for)
        pool.kill(victim)
        killed = time.time()
        assert handle.result(timeout=config.session_timeout - 5) == 2, "lab.work returns its execution count"
        took = finished_after(client, handle.id, killed)
        # detection within heartbeat_timeout plus one beat, then the 1 s task, plus slack for a busy machine
        bound = config.heartbeat_timeout + config.heartbeat_interval + 1.0 + 3.0
        record_figures("reaper_alone", {"finished_after_kill_s": round(took, 2), "bound_s": bound})
        assert took < bound, f"finished {took:.2f}s after the kill (bound {bound:.1f}s)"
        assert any(n.startswith(f"requeued: worker {victim} stopped heartbeating") for n in notes(client, handle.id))
        assert not any("took over" in n for n in notes(client, handle.id)), "Kafka redelivered within 30 s?"
        report = audit(client.backend, [handle.id], executions=execution_counts(client.backend, {handle.id: "reaped"}))
        assert (report.executions, report.attempts, report.results, report.lost) == (2, 2, 1, 0), report
        assert client.workers().set_index("name").loc[victim, "state"] == "dead"


@pytest.mark.parametrize("dispatch", ["shared", "partitioned"])
def test_kafka_redelivery_alone_with_the_reaper_off(make_config, tmp_path, wait_for, dispatch) -> None:
    """No worker runs the reaper: the task comes back only through Kafka (the consumer group's
    rebalance after the session timeout; the share group's release of the killed worker's records
    when its connection closes, or their lock's expiry), and the claim script takes it over from the
    silent holder."""
    config = make_config(imports=PROBE, reaper=False, dispatch=dispatch)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        handle, victim = running_on_one_of_two(client, pool, 1.0, "redelivered", wait_for)
        pool.kill(victim)
        killed = time.time()
        assert handle.result(timeout=30) == 2
        took = finished_after(client, handle.id, killed)
        # the session timeout (or the lock), a rebalance, the 1 s task, plus slack for a busy machine
        bound = (config.share_lock if dispatch == "shared" else config.session_timeout) + 1.0 + 5.0
        record_figures(f"kafka_alone_{dispatch}", {"finished_after_kill_s": round(took, 2), "bound_s": bound})
        assert took < bound, f"finished {took:.2f}s after the kill (bound {bound:.1f}s)"
        assert any(n.startswith(f"took over from {victim}") for n in notes(client, handle.id))
        assert not any(n.startswith("requeued") for n in notes(client, handle.id)), "the reaper ran though off"
        counts = execution_counts(client.backend, {handle.id: "redelivered"})
        report = audit(client.backend, [handle.id], executions=counts)
        assert (report.executions, report.attempts, report.results, report.lost) == (2, 2, 1, 0), report


def test_a_paused_worker_runs_the_task_twice_and_its_late_result_is_discarded(make_config, tmp_path, wait_for) -> None:
    """SIGSTOP past the heartbeat timeout: the task runs elsewhere; after SIGCONT the paused worker
    finishes too, its result is refused, it counts as revived, and the independent count shows the
    second execution that docs/reliability.md admits."""
    config = make_config(imports=PROBE)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        handle, victim = running_on_one_of_two(client, pool, 3.0, "paused", wait_for)
        group = pool.processes[victim].pid  # the worker leads its own process group (its executor is in it)
        os.killpg(group, signal.SIGSTOP)
        try:
            assert handle.result(timeout=30) == 2, "the second execution ran elsewhere and was kept"
            winner = handle.info()["worker"]  # type: ignore[index]
            assert winner != victim
        finally:
            os.killpg(group, signal.SIGCONT)
        wait_for(
            lambda: "result of " + handle.id + " discarded" in pool.processes[victim].log_path.read_text(),
            timeout=30,
            what="the paused worker to finish and have its result refused",
        )
        wait_for(
            lambda: client.backend.redis.hget(client.backend.keys.worker(victim), "revived") == "1",
            timeout=15,
            what="the paused worker to count as revived",
        )
        counts = execution_counts(client.backend, {handle.id: "paused"})
        report = audit(client.backend, [handle.id], executions=counts)
        record_figures("paused_worker", report.as_dict())
        assert (report.executions, report.duplicated, report.results, report.duplicates) == (2, 1, 1, 0), report
        assert report.clean, report.problems
        assert handle.result(timeout=1) == 2 and handle.info()["worker"] == winner  # type: ignore[index]
        assert [h["status"] for h in handle.history()].count("success") == 1


def test_a_poison_task_fails_with_worker_lost_while_replacements_go_on(make_config, tmp_path, wait_for) -> None:
    """A task that SIGKILLs its worker every time ends ``failed``/``worker_lost`` after max_retries;
    replacement workers, started as the victims die, finish every other task exactly once."""
    max_retries = 2
    config = make_config(imports=PROBE)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(2)
        wait_for(live_workers(client, 2), timeout=60, what="2 workers")
        tokens = {client.submit_with("lab.work", [0.1, f"ok-{i}"], wait=True).id: f"ok-{i}" for i in range(10)}
        poison = client.submit_with("kill_worker", ["poison"], max_retries=max_retries, wait=True)
        tokens.update(
            {client.submit_with("lab.work", [0.1, f"ok-{i}"], wait=True).id: f"ok-{i}" for i in range(10, 20)}
        )
        replacements = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(pool.alive()) < 2:
                pool.start(1)
                replacements += 1
            record = client.task(poison.id)
            if record and record["status"] == "failed" and audit(client.backend, tokens).unfinished == 0:
                break
            time.sleep(0.2)
        record = client.task(poison.id)
        assert record is not None and record["status"] == "failed", record
        assert record["reason"] == "worker_lost" and record["attempts"] == max_retries + 1, record
        poison_runs = execution_counts(client.backend, {poison.id: "poison"})[poison.id]
        assert poison_runs == max_retries + 1, f"the poison ran {poison_runs} times"
        assert replacements >= max_retries + 1, "each execution of the poison should have killed a worker"
        report = audit(client.backend, tokens, executions=execution_counts(client.backend, tokens))
        record_figures(
            "poison",
            {
                "max_retries": max_retries,
                "poison_executions": poison_runs,
                "replacements": replacements,
                "other_tasks": report.as_dict(),
            },
        )
        assert report.clean and report.succeeded == 20, report.problems
        assert (report.executions, report.duplicated) == (20, 0), report
        assert client.submit("add", 2, 3).result(timeout=30) == 5, "the replacements stopped consuming"


def test_the_audit_sees_what_the_queue_records_cannot(make_config) -> None:
    """The audit's independent count finds a second execution and a result no execution produced,
    both of which the queue's own records hide (no worker is involved: the records are written as
    the scripts would write them)."""
    config: Config = make_config(imports=PROBE)
    from yadtq.core.task import TaskMessage, TaskStatus
    from yadtq.store.backend import Backend

    backend = Backend(config)
    ids = []
    for token, runs in (("once", 1), ("twice", 2), ("never", 0)):
        msg = TaskMessage(op="lab.work", args=[0.0, token])
        backend.submit(msg)
        backend.heartbeat("w", "busy", msg.id, 1, "host", "0", time.time())
        claim = backend.claim(msg, "w")
        assert backend.finish(msg.id, "w", claim.attempt, TaskStatus.SUCCESS, runs)
        for _ in range(runs):
            backend.redis.incr(exec_key(config.namespace, token))
        ids.append(msg.id)
    tokens = dict(zip(ids, ("once", "twice", "never"), strict=True))
    report = audit(backend, ids, executions=execution_counts(backend, tokens))
    assert (report.tasks, report.attempts, report.results, report.succeeded) == (3, 3, 3, 3)
    assert (report.executions, report.duplicated, report.lost) == (3, 1, 1)
    assert not report.clean
    without = audit(backend, ids)
    assert without.clean and without.executions is None, "the queue's records alone see nothing wrong"
