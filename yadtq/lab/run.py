"""The experiment on real workers, Kafka and Redis: an open-loop load, faults on cue, and an audit.

A run gets a namespace of its own (its topics, groups and keys), starts the spec's worker processes
with :class:`~yadtq.processes.pool.Pool` (in a share group for ``shared`` dispatch, in a consumer group for
``partitioned`` and ``pooled``), waits until they are up (and, in a consumer group, until it has
dealt out every partition), and then sends each task at its scheduled time. The generator is **open
loop**: it never waits for a task to finish before sending the next, as real clients do not, and a
submit that is slow does not delay the next one (submits are handed to a few threads). Waiting is
measured from the scheduled time, and how late the generator was is reported (``lateness_*``), so
an overloaded laptop shows up as such instead of as a faster queue.

Every task runs :func:`yadtq.lab.probe.work`, which counts its own executions (started and run to
the end) in Redis; the audit is made from those counts, not from what the queue recorded.

While the run goes on, a sampler counts the tasks in the system every :data:`SAMPLE_INTERVAL`: the
tasks scheduled by then (from the plan) minus those whose work has ended (the size of the probe's
set ``NS:lab:left``, one ``SCARD``, read at that moment). That is the ``L`` of Little's law measured
on its own: it uses no time that the queue or the workers recorded, so comparing it with ``λ·W``,
whose ``W`` comes from the tasks' records, is a check that finish times recorded wrong, or tasks
that never finish, fail (:func:`yadtq.lab.result.littles_law`). After the
drain, the workers' heartbeat histories and records are read back, so each fault can be given its
detection latency (until the worker was declared dead, or said it stopped) and its recovery time
(until the tasks it held finished elsewhere). Whatever happens, the workers are stopped and reaped,
and the namespace's keys and topics deleted.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable, TaskTimeout, YadtqError
from yadtq.lab.probe import OPERATION, WARM_UP, done_key, exec_key, left_key
from yadtq.lab.result import Result
from yadtq.lab.simulate import dispatch_overhead, replay
from yadtq.lab.spec import Experiment, Fault
from yadtq.monitoring.monitor import owned
from yadtq.processes.pool import Pool
from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker

#: Seconds between the end of set-up and the first scheduled arrival, so the first tasks are on time.
LEAD = 0.3
#: Longest wait for one round of warm-up tasks before another round is sent.
WARM_UP_ROUND = 15.0
#: Threads that submit; more than one so a slow acknowledgement does not delay the next arrival.
SUBMITTERS = 4
#: Seconds between two counts of the tasks in the system (Little's law's ``L``): a few per response
#: time of the lab's loads, and one ``SCARD`` each.
SAMPLE_INTERVAL = 0.025
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
    cfg = worker_config(experiment, config or Config.from_env())
    schedule = experiment.schedule()
    pool = Pool(cfg)
    client = Client(cfg)
    completed = False
    deaths = _Deaths(client)
    try:
        client.broker.ensure_topics()
        if experiment.dispatch == "shared" and not client.broker.shared_dispatch():
            # the workers would fall back to a consumer group, and the run measure partitions
            raise RunError("dispatch 'shared' needs a Kafka broker with share groups (Kafka 4.2 or later)")
        pool.start(experiment.processes)
        _wait_for_group(client, pool, experiment, timeout=60.0)
        _warm_up(client, experiment, timeout=90.0)
        _wait_for_group(client, pool, experiment, timeout=60.0)
        plan = _Plan(
            t0=time.time() + LEAD,
            arrivals=schedule.arrivals.tolist(),
            services=schedule.services.tolist(),
            tokens=[f"{i:07d}" for i in range(len(schedule))],
        )
        sampler = _Sampler(client, plan)
        try:
            ids, faults, submit_errors = _drive(client, pool, experiment, plan, progress, drain_timeout)
        finally:
            samples = sampler.close()
        frame = _frame(client, plan, ids)
        beats, workers = _timeline(client, plan.t0)
        died = [(name, at - plan.t0) for name, at in deaths.close()]
        extra = {
            **_lateness(frame),
            **_audit(frame, submit_errors),
            "namespace": cfg.namespace,
            "faults_done": faults,
            # the heartbeat script's own count of "declared dead, then heartbeated again"
            "workers_revived": {str(k): int(v) for k, v in workers["revived"].items()} if len(workers) else {},
        }
        result = Result.build(frame, experiment, "run", extra, samples=samples)
        result.beats = beats
        held = _holders(client, frame, faults, plan.t0)
        result.faults = detection(faults, died, workers, beats, frame, held, experiment.heartbeat_interval)
        overhead = dispatch_overhead(result)
        result.summary["overhead_per_task"] = overhead
        for name, cost in (("replay_ideal", 0.0), ("replay", overhead)):
            ideal = replay(result, cost).summary
            result.summary.update({f"{name}_{m}": ideal[m] for m in ("wait_mean", "response_mean")})
        completed = True
        return result
    finally:
        deaths.close()
        problem = _clean_up(pool, client, cfg)
        if problem is not None and completed:  # otherwise the run's own error is the one to see
            raise RunError(f"clean-up of namespace {cfg.namespace} failed: {problem}") from problem


# --- set-up -------------------------------------------------------------------------------------------
def worker_config(experiment: Experiment, base: Config) -> Config:
    """The workers' settings for a run of ``experiment``: ``base``'s endpoints, a fresh namespace,
    and the spec's partitions, heartbeats, delivery, slots and dispatch."""
    return base.replace(
        namespace=f"lab{uuid.uuid4().hex[:10]}",
        partitions=experiment.partitions,
        heartbeat_interval=experiment.heartbeat_interval,
        heartbeat_timeout=experiment.heartbeat_timeout,
        imports=(*base.imports, "yadtq.lab.probe"),
        delivery=experiment.delivery,
        concurrency=experiment.slots,
        # Shared: the worker processes form one share group. Partitioned, and pooled (one process
        # that owns every partition): a consumer group.
        dispatch="shared" if experiment.dispatch == "shared" else "partitioned",
        # No shedding (a consumer group's; shared workers never shed): the models keep each
        # partition on one worker, and a shed moves partitions mid-run. It would also fire during
        # the warm-up, whose first task per worker includes the executor's start-up (over 2 s on a
        # busy machine): three workers shedding at once were seen to stop taking messages after
        # the rebalance.
        shed_after=0.0,
    )


def _wait_for_group(client: Client, pool: Pool, experiment: Experiment, timeout: float) -> None:
    """Until every worker heartbeats, unchanged for two heartbeats.

    In a consumer group (partitioned and pooled dispatch) also until the group has dealt the
    partitions out as the models assume (each worker that should own some does): before that,
    tasks on an unowned partition would wait for a rebalance, or one worker would serve another's
    share, and the run would measure that. In a share group no partition is a worker's own (a
    worker's heartbeat lists the partitions it may fetch from, often all of them), so heartbeating,
    idle or busy, is enough. Called again after the warm-up: a worker whose join came late may
    still be rebalancing when the warm-up ends."""
    deadline = time.monotonic() + timeout
    shared = experiment.dispatch == "shared"
    wanted = set(range(experiment.partitions))
    owners = sum(1 for count in experiment.partition_counts() if count)
    last: list[Any] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        table = client.workers()
        up = table[table["state"].isin(["idle", "busy", "idle (no partition)"])].sort_values("name")
        if shared:
            seen: list[Any] = list(up["name"])
            ready = len(up) >= experiment.processes
        else:
            seen = [owned(cell) for cell in up["partitions"]]
            ready = len(up) >= experiment.processes and set().union(*seen) == wanted and sum(map(bool, seen)) >= owners
        if not ready or seen != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= 2 * experiment.heartbeat_interval:
            return
        time.sleep(0.2)
    logs = "; ".join(f"{p.name}: {p.log_path.read_text()[-300:]!r}" for p in pool.processes.values())
    what = "join the share group" if shared else "join and own all partitions"
    raise ServiceUnavailable(f"workers did not {what} within {timeout:g}s (logs: {logs})")


def _warm_up(client: Client, experiment: Experiment, timeout: float) -> None:
    """Until every worker that can get a task has run one: a worker's first task also starts its
    executor process (about a second), and measuring that would blame the queue for start-up.
    Partitioned and pooled: every worker that owns a partition; tasks land on random partitions, so
    rounds of empty tasks are sent until all have one. Shared: every worker; a round goes to
    whichever workers ask first, so again rounds until each has had one."""
    if experiment.dispatch == "shared":
        owners = experiment.processes
    else:
        owners = sum(1 for count in experiment.partition_counts() if count)
    deadline = time.monotonic() + timeout
    round_, stuck = 0, 0
    while time.monotonic() < deadline:
        round_ += 1
        handles = [
            client.submit_with(OPERATION, [0.0, f"{WARM_UP}{round_}-{i}"]) for i in range(2 * experiment.partitions)
        ]
        # A round that does not finish within WARM_UP_ROUND is given up, not waited for to the end:
        # on a very busy machine a send or a rebalance in the workers' start-up was seen to leave
        # warm-up tasks queued for good, and a fresh round is what tells a slow start from a stuck one.
        round_deadline = min(deadline, time.monotonic() + WARM_UP_ROUND)
        try:
            for handle in handles:
                handle.accepted(timeout=client.config.submit_timeout + 5)
                handle.result(timeout=max(0.1, round_deadline - time.monotonic()))
        except (TaskTimeout, ServiceUnavailable):
            stuck += 1
            continue
        table = client.workers()
        if int((table["processed"] > 0).sum()) >= owners:
            return
    raise ServiceUnavailable(
        f"not every worker ran a warm-up task within {timeout:g}s ({stuck} of {round_} rounds stuck)"
    )


def _default_drain(experiment: Experiment) -> float:
    """Time allowed after the last arrival: the busiest worker's work, three times over, plus room for
    fault recovery (heartbeat timeout, Kafka session, pauses)."""
    work = experiment.expected_tasks * experiment.busiest_share * experiment.service_mean
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
    # Connect and fetch the topic's metadata now: the first send would otherwise take a while and
    # land after later ones, and a scripted scenario relies on the tasks' order in a partition.
    sender.broker.producer.partitions_for(client.config.task_topic)
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(SUBMITTERS, thread_name_prefix="lab-submit") as submitters:

        def submit(i: int) -> None:
            handle = sender.submit_with(OPERATION, [plan.services[i], plan.tokens[i]], max_retries=None)
            ids[i] = handle.id
            # A fast submit returns before Kafka acknowledges; a refusal must count as a submit
            # error, not as a task the queue lost.
            handle.accepted(timeout=client.config.submit_timeout + 5)

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


#: Time a replacement worker may need before it runs a task: its start (2-4 s on a busy machine),
#: joining the group, and its first task's executor start-up (up to 6 s seen).
RECOVERY = 15.0


def _quiet_period(experiment: Experiment) -> float:
    """How long nothing may finish, once all tasks are sent, before the rest are declared lost.

    After a fault, nothing may finish until the fault is detected, a worker takes the task over (a
    replacement may first have to start) and then runs it for its whole length; only after that is
    silence evidence of a loss. A lost task that the queue marks as failed ends the wait at once."""
    longest = max(experiment.service_times or (experiment.service_mean * 10,))
    base = max(15.0, 4 * experiment.heartbeat_timeout + 6, 3 * longest)
    if not experiment.faults:
        return base
    return base + longest + RECOVERY


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
    """Carry out the fault schedule; ``pause_for`` becomes a pause and a later resume, ``start`` a
    new worker (numbered after the others, so later faults can name it)."""
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
        for at, action, worker in sorted(actions, key=lambda a: a[0]):  # stable: same time, given order
            if stop.wait(max(0.0, t0 + at - time.time())):
                return
            if action == "start":
                name = pool.start(1)[0].name
            else:
                name = list(pool.processes)[worker]
                do[action](name)
            log.append({"at": at, "action": action, "worker": name, "done_at": time.time() - t0})
    finally:
        for stopper in stopping:
            stopper.join(timeout=pool.config.shutdown_grace + 30)


class _Sampler:
    """Counts the run's tasks in the system every ``interval`` seconds while the run goes on, from
    the plan's scheduled times and the probe's set of tasks whose work has ended (``SCARD``, read at
    that moment): Little's law's ``L``, apart from every time the queue recorded."""

    def __init__(self, client: Client, plan: _Plan, interval: float = SAMPLE_INTERVAL) -> None:
        self._redis = client.backend.redis
        self._key = left_key(client.config.namespace)
        self._t0 = plan.t0
        self._arrivals = np.sort(np.asarray(plan.arrivals, dtype=float))
        self._interval = interval
        self._stop = threading.Event()
        self._rows: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._sample, name="lab-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        tick = time.monotonic()
        while not self._stop.wait(max(0.0, tick - time.monotonic())):
            tick += self._interval
            if tick < time.monotonic():  # fell behind (a busy machine): no burst to catch up
                tick = time.monotonic() + self._interval
            before = time.time()
            try:
                departed = int(self._redis.scard(self._key))
            except Exception:  # a missed sample: the next one counts again
                continue
            self._rows.append(((before + time.time()) / 2 - self._t0, departed))

    def close(self) -> pd.DataFrame:
        """Stop sampling; one row per sample: ``at`` (seconds, on the clock of the task table's
        ``scheduled``), ``arrived`` (tasks scheduled by then), ``departed`` and ``in_system``."""
        self._stop.set()
        self._thread.join(timeout=5)
        frame = pd.DataFrame(list(self._rows), columns=["at", "departed"])
        arrived = np.searchsorted(self._arrivals, frame["at"].to_numpy(dtype=float), side="right")
        frame.insert(1, "arrived", arrived.astype(int))
        frame["in_system"] = frame["arrived"] - frame["departed"]
        return frame


# --- reading the outcome ----------------------------------------------------------------------------
def _frame(client: Client, plan: _Plan, ids: list[str | None]) -> pd.DataFrame:
    ns = client.config.namespace
    keys = [exec_key(ns, token) for token in plan.tokens]
    counts = client.backend.redis.mget(keys) if keys else []
    done_keys = [done_key(ns, token) for token in plan.tokens]
    completions = client.backend.redis.mget(done_keys) if done_keys else []
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
                "status": record.get("status"),
                "attempts": record.get("attempts", 0),
                "executions": int(counts[i] or 0),
                "completions": int(completions[i] or 0),
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
    """The delivery guarantees, judged by the probe's own counts, not by the queue's records.

    Lost: no execution ran to its end. Duplicated: more than one did (the effect happened twice).
    Restarted: an execution was cut short (its worker died) and the task ran again, to one end.
    Completed once: exactly one execution ran to its end. ``audit_queue_failed`` is what the queue
    itself admits (tasks not ``success``), for comparison with the independent count."""
    done, started = frame["completions"], frame["executions"]
    return {
        "audit_tasks": len(frame),
        "audit_lost": int((done == 0).sum()),
        "audit_duplicated": int((done > 1).sum()),
        "audit_restarted": int(((started > done) & (done == 1)).sum()),
        "audit_executed_more_than_once": int((started > 1).sum()),
        "audit_never_executed": int((started == 0).sum()),
        "audit_completed_once": int((done == 1).sum()),
        "audit_queue_failed": int((frame["status"] != "success").sum()),
        "audit_submit_errors": len(submit_errors),
    }


AUDIT_COLUMNS = {
    "audit_tasks": "tasks",
    "audit_lost": "lost",
    "audit_duplicated": "completed more than once",
    "audit_restarted": "restarted after a crash",
    "audit_completed_once": "completed exactly once",
}


def audit_table(results: dict[str, Result]) -> pd.DataFrame:
    """One row per run (keyed by a label, e.g. the delivery mode): the audit a class compares."""
    rows = {label: {name: r.summary[key] for key, name in AUDIT_COLUMNS.items()} for label, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


# --- failure detection --------------------------------------------------------------------------------
def _timeline(client: Client, t0: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every heartbeat (worker, at, state, task; ``at`` in seconds from ``t0``) and every worker's
    record (dead_at, stopped_at, revived, lost, ...), read before the namespace is deleted."""
    backend = client.backend
    records = backend.workers()
    rows = [{"worker": w["name"], **beat} for w in records for beat in backend.beats(w["name"])]
    beats = pd.DataFrame(rows, columns=["worker", "at", "state", "task"])
    beats["at"] = beats["at"].astype(float) - t0
    beats = beats.sort_values(["worker", "at"], ignore_index=True)
    workers = pd.DataFrame(records)
    for column in ("started_at", "dead_at", "stopped_at", "last_heartbeat"):
        if column not in workers:
            workers[column] = float("nan")
        workers[column] = workers[column].astype(float) - t0
    for column in ("revived", "lost"):
        workers[column] = workers[column].fillna(0).astype(int) if column in workers else 0
    return beats, workers.set_index("name") if "name" in workers else workers


def _holders(client: Client, frame: pd.DataFrame, faults: list[dict[str, Any]], t0: float) -> dict[int, list[str]]:
    """For each fault (by index), the tasks its worker was running at that moment, from the tasks'
    status histories (a ``processing`` step by that worker before the fault, ended after it)."""
    victims = {i: f for i, f in enumerate(faults) if f["action"] in ("kill", "term", "pause")}
    if not victims:
        return {}
    held: dict[int, list[str]] = {i: [] for i in victims}
    candidates = frame[(frame["attempts"] > 1) | frame["worker"].isin({f["worker"] for f in victims.values()})]
    for task_id in candidates["id"]:
        steps = client.backend.history(task_id)
        for i, fault in victims.items():
            at = fault["done_at"]
            for step, after in zip(steps, [*steps[1:], None], strict=True):
                ended = after["at"] - t0 if after else float("inf")
                began = step["at"] - t0
                if step["status"] == "processing" and step.get("worker") == fault["worker"] and began <= at < ended:
                    held[i].append(task_id)
    return held


def detection(
    faults: list[dict[str, Any]],
    deaths: list[tuple[str, float]],
    workers: pd.DataFrame,
    beats: pd.DataFrame,
    frame: pd.DataFrame,
    held: dict[int, list[str]],
    interval: float,
) -> pd.DataFrame:
    """One row per fault done: when it happened, when the queue noticed, and when its work was done.

    ``detected``: seconds from the fault until the worker was declared dead in Redis (the reaper's
    ``worker`` event; for a kill or a pause, NaN if it never was, as a short pause should not be) or
    recorded itself as stopped (a SIGTERM). ``recovered``: seconds until the last task it was running
    at the fault finished (elsewhere, or on the worker itself after a pause that went unnoticed).
    ``revived``: the worker was declared dead and heartbeated again afterwards (a false positive).
    """
    finished = frame.set_index("id")["finished"]
    rows = []
    for i, fault in enumerate(faults):
        name, at, action = fault["worker"], fault["done_at"], fault["action"]
        later = [f["done_at"] for f in faults[i + 1 :] if f["worker"] == name]
        # a pause's reaper verdict may come up to one heartbeat after the resume
        until = (later[0] + interval) if later else float("inf")
        detected = float("nan")
        if action in ("kill", "pause"):
            times = [t for who, t in deaths if who == name and at <= t < until]
            detected = min(times) - at if times else float("nan")
        elif action == "term" and name in workers.index:
            stopped = float(workers.loc[name, "stopped_at"])
            detected = stopped - at if stopped >= at else float("nan")
        revived = 0
        if action == "pause" and detected == detected:
            own = beats[(beats["worker"] == name) & (beats["at"] > at + detected)]
            revived = int(len(own) > 0)
        tasks = held.get(i, [])
        ends = [finished.get(t, float("nan")) for t in tasks]
        rows.append(
            {
                "at": at,
                "action": action,
                "worker": name,
                "detected": detected,
                "held": len(tasks),
                "recovered": max(ends) - at if tasks else float("nan"),
                "revived": revived,
            }
        )
    return pd.DataFrame(rows, columns=["at", "action", "worker", "detected", "held", "recovered", "revived"])


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


class _Deaths:
    """Listens to the namespace's event channel for the reaper's ``worker ... dead`` events, so every
    death is seen, not only a worker's latest (its record keeps one ``dead_at``)."""

    def __init__(self, client: Client) -> None:
        self._pubsub = client.backend.redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(client.backend.keys.events)
        self._stop = threading.Event()
        self.events: list[tuple[str, float]] = []  # (worker, Unix time)
        self._thread = threading.Thread(target=self._listen, name="lab-deaths", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.2)
            except Exception:  # the connection went away: the run reports what it saw so far
                return
            if message is None:
                continue
            try:
                event = json.loads(message["data"])
            except (TypeError, ValueError):
                continue
            if event.get("type") == "worker" and event.get("state") == "dead":
                self.events.append((str(event["worker"]), float(event["at"])))

    def close(self) -> list[tuple[str, float]]:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._pubsub.close()
        except Exception:  # closing a broken connection: nothing left to release
            pass
        return list(self.events)


__all__ = ["RunError", "audit_table", "detection", "run", "worker_config"]
