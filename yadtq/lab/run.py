"""The experiment on real workers, Kafka and Redis: an open-loop load, faults on cue, and an audit.

A run gets a namespace of its own (its topics, consumer group and keys), starts ``workers`` worker
processes with :class:`~yadtq.pool.Pool`, waits until the group has dealt out every partition, and
then sends each task at its scheduled time. The generator is **open loop**: it never waits for a
task to finish before sending the next, as real clients do not, and a submit that is slow does not
delay the next one (submits are handed to a few threads). Waiting is measured from the scheduled
time, and how late the generator was is reported (``lateness_*``), so an overloaded laptop shows up
as such instead of as a faster queue.

Every task runs :func:`yadtq.lab.probe.work`, which counts its own executions in Redis; the audit
compares those counts with what the queue recorded. Whatever happens, the workers are stopped and
reaped, and the namespace's keys and topics deleted.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from yadtq.backend import Backend
from yadtq.broker import Broker
from yadtq.client import Client
from yadtq.config import Config
from yadtq.errors import ServiceUnavailable, YadtqError
from yadtq.lab.probe import OPERATION, exec_key
from yadtq.lab.result import Result
from yadtq.lab.simulate import dispatch_overhead, replay
from yadtq.lab.spec import Experiment, Fault
from yadtq.pool import Pool

#: Seconds between the end of set-up and the first scheduled arrival, so the first tasks are on time.
LEAD = 0.3
#: Threads that submit; more than one so a slow acknowledgement does not delay the next arrival.
SUBMITTERS = 4
FINAL = ("success", "failed", "cancelled")


class RunError(YadtqError):
    """A run could not be carried out as described (for example, workers never joined)."""


@dataclass
class _Plan:
    """What the run needs to know about its tasks."""

    t0: float
    arrivals: list[float]
    services: list[float]
    tokens: list[str]


def run(
    experiment: Experiment,
    config: Config | None = None,
    progress: bool = True,
    drain_timeout: float | None = None,
) -> Result:
    """Run ``experiment`` for real and return its :class:`Result` (``source == "run"``).

    ``config`` gives the endpoints (default: ``Config.from_env()``); its namespace is replaced by a
    fresh one. ``drain_timeout`` bounds the wait after the last arrival (default: from the expected
    work, see :func:`_default_drain`).
    """
    base = config or Config.from_env()
    cfg = base.replace(
        namespace=f"lab{uuid.uuid4().hex[:10]}",
        partitions=experiment.partitions,
        heartbeat_interval=experiment.heartbeat_interval,
        heartbeat_timeout=experiment.heartbeat_timeout,
        imports=(*base.imports, "yadtq.lab.probe"),
    )
    schedule = experiment.schedule()
    pool = Pool(cfg)
    client = Client(cfg)
    completed = False
    try:
        client.broker.ensure_topics()
        pool.start(experiment.workers, extra_env={"YADTQ_DELIVERY": experiment.delivery})
        _wait_for_group(client, pool, experiment, timeout=60.0)
        _warm_up(client, experiment, timeout=60.0)
        plan = _Plan(
            t0=time.time() + LEAD,
            arrivals=schedule.arrivals.tolist(),
            services=schedule.services.tolist(),
            tokens=[f"{i:07d}" for i in range(len(schedule))],
        )
        ids, faults, submit_errors = _drive(client, pool, experiment, plan, progress, drain_timeout)
        frame = _frame(client, plan, ids)
        extra = {
            **_lateness(frame),
            **_audit(frame, submit_errors),
            "namespace": cfg.namespace,
            "faults_done": faults,
        }
        result = Result.build(frame, experiment, "run", extra)
        overhead = dispatch_overhead(result)
        result.summary["overhead_per_task"] = overhead
        for name, cost in (("replay_ideal", 0.0), ("replay", overhead)):
            ideal = replay(result, cost).summary
            result.summary.update({f"{name}_{m}": ideal[m] for m in ("wait_mean", "response_mean")})
        completed = True
        return result
    finally:
        problem = _clean_up(pool, client, cfg)
        if problem is not None and completed:  # otherwise the run's own error is the one to see
            raise RunError(f"clean-up of namespace {cfg.namespace} failed: {problem}") from problem


# --- set-up -------------------------------------------------------------------------------------------
def _wait_for_group(client: Client, pool: Pool, experiment: Experiment, timeout: float) -> None:
    """Until every worker heartbeats and the group has dealt out every partition: before that, tasks
    on an unowned partition would wait for the rebalance and the run would measure start-up."""
    deadline = time.monotonic() + timeout
    wanted = set(range(experiment.partitions))
    while time.monotonic() < deadline:
        table = client.workers()
        up = table[table["state"].isin(["idle", "busy", "idle (no partition)"])]
        owned = {int(p) for cell in up["partitions"].dropna() for p in str(cell).split(",") if p.strip().isdigit()}
        if len(up) >= experiment.workers and owned == wanted:
            return
        time.sleep(0.2)
    logs = "; ".join(f"{p.name}: {p.log_path.read_text()[-300:]!r}" for p in pool.processes.values())
    raise ServiceUnavailable(f"workers did not join and own all partitions within {timeout:g}s (logs: {logs})")


def _warm_up(client: Client, experiment: Experiment, timeout: float) -> None:
    """Until every worker that owns a partition has run a task: a worker's first task also starts
    its executor process (about a second), and measuring that would blame the queue for start-up.
    Tasks land on random partitions, so rounds of empty tasks are sent until all have one."""
    owners = sum(1 for count in experiment.partition_counts() if count)
    deadline = time.monotonic() + timeout
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        handles = [
            client.submit_with(OPERATION, [0.0, f"warm-up-{round_}-{i}"]) for i in range(2 * experiment.partitions)
        ]
        for handle in handles:
            handle.result(timeout=max(0.1, deadline - time.monotonic()))
        table = client.workers()
        if int((table["processed"] > 0).sum()) >= owners:
            return
    raise ServiceUnavailable(f"not every worker ran a warm-up task within {timeout:g}s")


def _default_drain(experiment: Experiment) -> float:
    """Time allowed after the last arrival: the busiest worker's work, three times over, plus room for
    fault recovery (heartbeat timeout, Kafka session, pauses)."""
    share = max(experiment.partition_counts()) / experiment.partitions
    work = experiment.expected_tasks * share * experiment.service_mean
    paused = sum(f.seconds for f in experiment.faults)
    return 30.0 + 3 * work + paused + 5 * experiment.heartbeat_timeout * len(experiment.faults)


# --- the load and the faults --------------------------------------------------------------------------
def _drive(
    client: Client,
    pool: Pool,
    experiment: Experiment,
    plan: _Plan,
    progress: bool,
    drain_timeout: float | None,
) -> tuple[list[str | None], list[dict[str, Any]], list[str]]:
    """Send the tasks and inject the faults on time, then wait for the drain (with a deadline)."""
    from tqdm.auto import tqdm

    n = len(plan.arrivals)
    ids: list[str | None] = [None] * n
    stop = threading.Event()
    done_faults: list[dict[str, Any]] = []
    sender = Client(client.config)
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(SUBMITTERS, thread_name_prefix="lab-submit") as submitters:

        def submit(i: int) -> None:
            handle = sender.submit_with(OPERATION, [plan.services[i], plan.tokens[i]], max_retries=None)
            ids[i] = handle.id

        def generate() -> None:
            for i, at in enumerate(plan.arrivals):
                if stop.wait(max(0.0, plan.t0 + at - time.time())):
                    return
                futures.append(submitters.submit(submit, i))

        threads = [threading.Thread(target=generate, name="lab-generator", daemon=True)]
        threads.append(threading.Thread(target=_faults, args=(pool, experiment.faults, plan.t0, stop, done_faults)))
        for thread in threads:
            thread.start()
        bar = tqdm(total=n, desc=experiment.name, unit="task", disable=not progress, leave=False)
        try:
            last_arrival = plan.t0 + (plan.arrivals[-1] if n else 0.0)
            drain = drain_timeout if drain_timeout is not None else _default_drain(experiment)
            _await_drain(client, ids, bar, last_arrival + drain, _quiet_period(experiment), threads[0], futures)
        finally:
            stop.set()
            bar.close()
            for thread in threads:
                thread.join(timeout=experiment.heartbeat_timeout + 60)
    errors = [str(f.exception()) for f in futures if f.exception() is not None]
    sender.close()
    return ids, done_faults, errors


def _quiet_period(experiment: Experiment) -> float:
    """How long nothing may finish, once all tasks are sent, before the rest are declared lost."""
    longest = max(experiment.service_times or (experiment.service_mean * 10,))
    return max(15.0, 4 * experiment.heartbeat_timeout + 6, 3 * longest)


def _await_drain(
    client: Client,
    ids: list[str | None],
    bar: Any,
    deadline: float,
    quiet: float,
    generator: threading.Thread,
    futures: list[Future[None]],
) -> None:
    """Until every task is final, nothing has finished for ``quiet`` seconds after the last
    submission (the rest are lost), or the deadline."""
    finished, changed = 0, time.time()
    while time.time() < deadline:
        time.sleep(0.25)
        sent = [task_id for task_id in ids if task_id is not None]
        now_finished = _count_final(client, sent)
        bar.update(now_finished - finished)
        bar.set_postfix(sent=len(sent), refresh=False)
        if now_finished != finished:
            finished, changed = now_finished, time.time()
        everything_sent = not generator.is_alive() and all(f.done() for f in list(futures))
        if everything_sent and finished == len(sent):
            return
        if everything_sent and time.time() - changed > quiet:
            return


def _count_final(client: Client, ids: list[str]) -> int:
    pipe = client.backend.redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(client.backend.keys.task(task_id), "status")
    return sum(status in FINAL for status in pipe.execute())


def _faults(pool: Pool, faults: tuple[Fault, ...], t0: float, stop: threading.Event, log: list[dict[str, Any]]) -> None:
    """Carry out the fault schedule; ``pause_for`` becomes a pause and a later resume."""
    names = list(pool.processes)
    actions: list[tuple[float, str, int]] = []
    for fault in faults:
        if fault.action == "pause_for":
            actions += [(fault.at, "pause", fault.worker), (fault.at + fault.seconds, "resume", fault.worker)]
        else:
            actions.append((fault.at, fault.action, fault.worker))
    stopping: list[threading.Thread] = []

    def term(name: str) -> None:
        # A graceful stop waits for the worker's task; the faults after it must not wait too.
        stopper = threading.Thread(target=pool.stop, args=(name, pool.config.shutdown_grace + 15), name="lab-term")
        stopper.start()
        stopping.append(stopper)

    do: dict[str, Callable[[str], object]] = {
        "kill": pool.kill,
        "term": term,
        "pause": lambda name: pool.signal(name, signal.SIGSTOP),
        "resume": lambda name: pool.signal(name, signal.SIGCONT),
    }
    try:
        for at, action, worker in sorted(actions):
            if stop.wait(max(0.0, t0 + at - time.time())):
                return
            do[action](names[worker])
            log.append({"at": at, "action": action, "worker": names[worker], "done_at": time.time() - t0})
    finally:
        for stopper in stopping:
            stopper.join(timeout=pool.config.shutdown_grace + 30)


# --- reading the outcome ----------------------------------------------------------------------------
def _frame(client: Client, plan: _Plan, ids: list[str | None]) -> pd.DataFrame:
    keys = [exec_key(client.config.namespace, token) for token in plan.tokens]
    counts = client.backend.redis.mget(keys) if keys else []
    rows = []
    for i, task_id in enumerate(ids):
        record = client.task(task_id) if task_id else None
        record = record or {}
        ok = record.get("status") == "success"

        def rel(name: str, record: dict[str, Any] = record) -> float | None:
            value = record.get(name)
            return value - plan.t0 if value else None

        rows.append(
            {
                "id": task_id or f"unsent-{plan.tokens[i]}",
                "worker": record.get("worker") or None,
                "scheduled": plan.arrivals[i],
                "submitted": rel("submitted_at"),
                "started": rel("started_at") if ok else None,
                "finished": rel("finished_at") if ok else None,
                "attempts": record.get("attempts", 0),
                "executions": int(counts[i] or 0),
            }
        )
    return pd.DataFrame(rows).astype({"started": float, "finished": float, "submitted": float})


def _lateness(frame: pd.DataFrame) -> dict[str, float]:
    late = (frame["submitted"] - frame["scheduled"]).dropna()
    return {
        "lateness_mean": float(late.mean()) if len(late) else 0.0,
        "lateness_p99": float(late.quantile(0.99)) if len(late) else 0.0,
        "lateness_max": float(late.max()) if len(late) else 0.0,
    }


def _audit(frame: pd.DataFrame, submit_errors: list[str]) -> dict[str, Any]:
    """Lost: never finished. Executed more than once: by the probe's own count, not the queue's."""
    finished = frame["finished"].notna()
    return {
        "audit_tasks": len(frame),
        "audit_lost": int((~finished).sum()),
        "audit_executed_more_than_once": int((frame["executions"] > 1).sum()),
        "audit_never_executed": int((frame["executions"] == 0).sum()),
        "audit_completed_once": int((finished & (frame["executions"] == 1)).sum()),
        "audit_submit_errors": len(submit_errors),
    }


def _clean_up(pool: Pool, client: Client, config: Config) -> Exception | None:
    """Workers first (so none recreates a key), then the keys, then the topics; each step is tried
    even if the one before failed, so a broken run still leaves nothing behind."""
    steps: list[Callable[[], object]] = [
        pool.close,
        client.close,
        lambda: Backend(config).purge(),
        lambda: Broker(config).delete_topics(),
    ]
    failure: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:  # every step must run
            failure = failure or exc
    return failure


from yadtq.lab.sweep import sweep  # noqa: E402 - re-exported: ``from yadtq.lab.run import run, sweep``

__all__ = ["RunError", "run", "sweep"]
