"""The experiment as a discrete-event model (SimPy): what the queue would do with no overheads.

Each worker slot is a SimPy process that takes the next task of its queue, waits for it to arrive
if it has not yet, and holds for its service time. The queues mirror the dispatch:

- ``shared`` (yadtq's default, a Kafka share group): one FCFS queue shared by every slot of every
  worker process, the M/M/c model of the textbooks; each task records the process that served it.
- ``partitioned`` (a consumer group): every task lands on a random partition, as a random message
  key does; Kafka's range assignor gives each worker a contiguous block of partitions, and a worker
  serves only tasks of its own partitions.
- ``pooled``: one FCFS queue shared by all slots of *one* worker process with ``concurrency = c``:
  the same queue as ``shared``, in one process.

A worker process with several slots is as many SimPy processes pulling from its queue. The slot
that has been free the longest takes the next task.

The arrival and service times come from :meth:`Experiment.schedule`, so a simulation and a real
run of one spec see the same tasks. Faults and delivery modes are not modelled: the simulation is
the fault-free reference a faulty run is compared with.

**Why SimPy, and why workers pull.** Ciw (tried first) models the same queue but ran about
30,000 tasks/s here, i.e. over half a minute for 10^6 tasks. SimPy with one process per *task*
is ~4 events per task; with one process per *worker*, pulling its next task from a precomputed
FCFS queue, it is at most 2 events per task. Measured on this 2-core machine: 10^6 tasks,
100 workers, ρ = 0.95, ~3 s for the event loop and ~4 s for the whole call.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import pandas as pd
import simpy

from yadtq.lab.result import Result
from yadtq.lab.spec import DISPATCHES, Experiment


def simulate(experiment: Experiment, dispatch: str | None = None) -> Result:
    """Simulate ``experiment`` (by its own ``dispatch`` unless another is given); the Result has the
    same columns as a real run's (one execution each)."""
    dispatch = dispatch or experiment.dispatch
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {', '.join(DISPATCHES)}, not {dispatch!r}")
    clock = time.perf_counter()
    schedule = experiment.schedule()
    n = len(schedule)
    arrivals: list[float] = schedule.arrivals.tolist()
    services: list[float] = schedule.services.tolist()
    started = [0.0] * n
    served_by = [0] * n

    env = simpy.Environment()
    queues, slots = _queues(experiment, n, dispatch)
    for worker, queue in enumerate(queues):
        for _ in range(slots):
            env.process(_serve(env, worker, queue, arrivals, services, started, served_by))
    env.run()
    loop_seconds = time.perf_counter() - clock

    names = np.array([f"worker-{i + 1}" for i in range(len(queues))])
    start = np.asarray(started)
    frame = pd.DataFrame(
        {
            "id": [f"t{i:07d}" for i in range(n)],
            "worker": names[np.asarray(served_by)],
            "scheduled": schedule.arrivals,
            "submitted": schedule.arrivals,
            "started": start,
            "finished": start + schedule.services,
            "status": "success",
            "attempts": 1,
            "executions": 1,
            "completions": 1,
        }
    )
    extra = {"dispatch": dispatch, "lateness_mean": 0.0, "lateness_max": 0.0}
    result = Result.build(frame, experiment, "simulation", extra, slots=slots)
    result.summary["simulation_seconds"] = time.perf_counter() - clock
    result.summary["event_loop_seconds"] = loop_seconds
    return result


def replay(result: Result, overhead: float = 0.0) -> Result:
    """The ideal queue fed with a real run's own tasks: the same arrival times, the *measured*
    service times, and each task on the worker that really ran it, served FCFS; each task also
    occupies its worker for ``overhead`` seconds before it starts (see :func:`dispatch_overhead`).

    With shared dispatch the ideal queue is one queue for the slots of every worker that ran a task,
    so a task goes to whichever slot is free first, not necessarily to the worker that ran it.

    Comparing a run with its replay cancels the luck of the draw (which tasks were long, which
    partition each landed on), so what remains is the queue's own behaviour: with ``overhead=0``,
    everything the worker does outside a task (fetch, claim, commit) and any unfairness; with the
    measured overhead, only what a constant per-task cost does not explain. Unfinished tasks are
    left out.
    """
    done = result.tasks.dropna(subset=["started", "finished"]).sort_values("scheduled", kind="stable")
    arrivals: list[float] = done["scheduled"].tolist()
    occupied: list[float] = (done["service"] + overhead).tolist()
    n = len(done)
    started = [0.0] * n
    served_by = [0] * n
    workers = done["worker"].to_numpy()
    names = sorted(set(workers))
    slots = _slots(result)
    shared = result.experiment is not None and result.experiment.dispatch == "shared"
    one_queue = _Queue(np.arange(n))
    env = simpy.Environment()
    for w, name in enumerate(names):
        queue = one_queue if shared else _Queue(np.flatnonzero(workers == name))
        for _ in range(slots):
            env.process(_serve(env, w, queue, arrivals, occupied, started, served_by))
    env.run()
    frame = done[["id", "worker", "scheduled", "submitted", "status", "attempts", "executions", "completions"]].copy()
    if shared and n:
        frame["worker"] = np.asarray(names)[np.asarray(served_by)]
    frame["started"] = np.asarray(started) + overhead
    frame["finished"] = frame["started"] + done["service"]
    return Result.build(frame, result.experiment, "replay", {"overhead": overhead}, slots=slots)


def _slots(result: Result) -> int:
    """Slots per worker process of the run (1 when the experiment is not known)."""
    return result.experiment.slots if result.experiment is not None else 1


def dispatch_overhead(result: Result) -> float:
    """The mean time a slot spends between tasks: the average, over every task, of its start minus
    the later of its arrival and the moment a slot of its worker became free (with one slot: the end
    of the worker's previous task). It covers fetching the message, claiming it and committing the
    one before; zero in a simulation."""
    done = result.tasks.dropna(subset=["started", "finished"]).sort_values("started", kind="stable")
    slots = _slots(result)
    free: dict[str, list[float]] = {}
    gaps = []
    for worker, scheduled, start, finish in done[["worker", "scheduled", "started", "finished"]].itertuples(False):
        heap = free.setdefault(worker, [-math.inf] * slots)
        ready = max(scheduled, heapq.heappop(heap))
        gaps.append(start - ready)
        heapq.heappush(heap, finish)
    return float(np.mean(gaps)) if gaps else 0.0


class _Queue:
    """Task indices in arrival order and a cursor; a shared or pooled queue is one object that every
    slot pulls from."""

    def __init__(self, indices: np.ndarray) -> None:
        self.indices: list[int] = indices.tolist()
        self.next = 0


def _queues(experiment: Experiment, n: int, dispatch: str) -> tuple[list[_Queue], int]:
    """One queue per worker process (shared: the same queue for every process), and the slots that
    serve each."""
    if dispatch == "pooled":
        return [_Queue(np.arange(n))], experiment.servers
    if dispatch == "shared":
        return [_Queue(np.arange(n))] * experiment.workers, experiment.concurrency
    # A separate stream (not the schedule's): the partition is the key's hash, not part of the load.
    rng = np.random.default_rng(np.random.SeedSequence(experiment.seed).spawn(3)[2])
    partition = rng.integers(0, experiment.partitions, n)
    counts = experiment.replace(dispatch="partitioned").partition_counts()
    owner = np.repeat(np.arange(experiment.workers), counts)
    task_owner = owner[partition]
    return [_Queue(np.flatnonzero(task_owner == w)) for w in range(experiment.workers)], experiment.concurrency


def _serve(
    env: simpy.Environment,
    worker: int,
    queue: _Queue,
    arrivals: list[float],
    services: list[float],
    started: list[float],
    served_by: list[int],
) -> Generator[Any, Any, None]:
    while queue.next < len(queue.indices):
        task = queue.indices[queue.next]
        queue.next += 1
        if arrivals[task] > env.now:  # idle: the task is not there yet
            yield env.timeout(arrivals[task] - env.now)
        started[task] = env.now
        served_by[task] = worker
        yield env.timeout(services[task])
