"""Throughput and latency on the workload of ../shared/bench-anchors (Celery, RQ, Dramatiq, Huey, arq).

    python bench/throughput.py [--tasks 10000] [--workers 2] [--concurrency 1] [--partitions 8]
                               [--dispatch shared|partitioned] [--wait] [--stored 0]
                               [--collect gather|each] [--out FILE]

Same method as the anchors: fresh workers, a verified warm-up of 200 `add` tasks, then `add(i, i)` for
i < N submitted one call at a time while the workers consume, then every result collected in order
and checked (with ``client.gather``, or ``--collect each``: one ``result()`` call per task); then 200
sequential round trips for latency. ``--wait`` makes every
submit wait for Kafka's acknowledgement (the safe, slower path); ``--stored N`` first fills the
namespace with N finished task records, to show that the cost per task does not grow with history.
Also reports the resident memory of the workers (with their executor processes) and of this client.
Writes bench/results/throughput.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yadtq import Client, Config, Pool
from yadtq.transport.broker import Broker

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def scratch(config: Config) -> Iterator[tuple[Client, Pool]]:
    """A client and a worker pool on ``config``'s namespace, which each run makes its own. On the
    way out the workers stop first, so none recreates a key, then the namespace's keys and topics go."""
    with Client(config) as client, Pool(config) as pool:
        try:
            yield client, pool
        finally:
            pool.close()
            client.backend.purge()
            Broker(config).delete_topics()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (a worker's executors), in MB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        pids.extend(int(c) for c in children)
    return round(total / 1024, 1)


def fill(client: Client, n: int) -> None:
    """``n`` finished task records and index entries, written directly (history for the stored-tasks run)."""
    pipe = client.backend.redis.pipeline(transaction=False)
    now = time.time()
    for i in tqdm(range(n), desc="stored tasks"):
        task_id = f"old{i:029d}"
        pipe.hset(client.backend.keys.task(task_id), mapping={"id": task_id, "op": "add", "status": "success"})
        pipe.zadd(client.backend.keys.tasks, {task_id: now - 1000 + i * 1e-6})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    quiet_redis(client)


def quiet_redis(client: Client, timeout: float = 600.0) -> None:
    """Rewrite Redis's append-only file now rather than during the measurement: a million new keys
    would otherwise set off an automatic rewrite (a fork that copies them all) in the middle of it."""
    redis = client.backend.redis
    if not int(redis.info("persistence").get("aof_enabled", 0)):
        return
    try:
        redis.bgrewriteaof()
    except Exception:  # already rewriting: wait for that one
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = redis.info("persistence")
        if not int(info.get("aof_rewrite_in_progress", 0)) and not int(info.get("aof_rewrite_scheduled", 0)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Redis still rewriting its append-only file after {timeout:g}s")


def start_warm(client: Client, pool: Pool, workers: int) -> list[Any]:
    """Start the workers, wait (60 s at most) until each one that can have a partition has one,
    and warm them with 200 tasks. (Live is not enough: a worker still joining the group would sit
    out the first seconds of the measurement.)"""
    started = pool.start(workers)
    owners = min(workers, client.config.partitions)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = client.workers(live_only=True)
        if len(live) >= workers and sum(bool(p) for p in live["partitions"]) >= owners:
            break
        time.sleep(0.1)
    warm = [client.submit("add", i, i) for i in range(200)]
    assert [h.result(timeout=60) for h in warm] == [2 * i for i in range(200)]
    time.sleep(1)
    return started


def measure(
    tasks: int = 10_000,
    workers: int = 2,
    concurrency: int = 1,
    partitions: int = 8,
    wait: bool = False,
    stored: int = 0,
    sleep: float = 0.0,
    backlog: bool = False,
    collect: str = "gather",
    dispatch: str = "shared",
) -> dict[str, Any]:
    """One run; with ``sleep`` the tasks are ``sleep(sleep)`` (I/O-bound work) instead of ``add(i, i)``.

    With ``backlog`` it also measures the workers alone: they are paused (SIGSTOP) while the same
    number of tasks is submitted, then resumed, and timed until the last result. That is their
    capacity, whatever the speed of the client (with heartbeat and session timeouts long enough
    that the pause is not taken for a death).
    """

    def task(i: int) -> tuple[str, tuple[Any, ...], Any]:
        return ("sleep", (sleep,), sleep) if sleep else ("add", (i, i), 2 * i)

    config = Config.from_env(
        namespace=f"tput{uuid.uuid4().hex[:8]}",
        log_level="WARNING",
        partitions=partitions,
        concurrency=concurrency,
        dispatch=dispatch,
        submit_wait=wait,
        **({"heartbeat_timeout": 60.0, "session_timeout": 30.0, "max_poll_interval": 60.0} if backlog else {}),
    )
    with scratch(config) as (client, pool):
        if stored:
            fill(client, stored)
        started = start_warm(client, pool, workers)

        start = time.perf_counter()
        handles = [client.submit(task(i)[0], *task(i)[1]) for i in tqdm(range(tasks), desc="submit", mininterval=1)]
        enqueued = time.perf_counter()
        results = fetch(client, handles, collect)
        drained = time.perf_counter()
        # Each result against the one computed here, not by the queue: a wrong or missing one fails the run.
        wrong = sum(1 for i, result in enumerate(results) if result != task(i)[2])
        worker_rss = [rss_mb(w.pid) for w in started]
        backlog_rate = None
        if backlog:
            backlog_rate, wrong_after = drain_backlog(client, pool, [task(i) for i in range(tasks)])
            wrong += wrong_after

        time.sleep(1)
        latencies = []
        for i in range(200):
            t0 = time.perf_counter()
            wrong += client.submit("add", i, i).result(timeout=60) != 2 * i
            latencies.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "tasks": tasks,
        "workers": workers,
        "concurrency": concurrency,
        "partitions": partitions,
        "dispatch": dispatch,
        "submit": "wait for ack" if wait else "batched",
        "stored_before": stored,
        "collect": collect,
        "op": f"sleep({sleep:g})" if sleep else "add(i, i)",
        "enqueue_per_s": round(tasks / (enqueued - start)),
        "drain_per_s": round(tasks / (drained - start)),
        "latency_ms": {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2)},
        "backlog_drain_per_s": backlog_rate,
        "worker_rss_mb": max(worker_rss),
        "client_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wrong_results": wrong,
        "verified": wrong == 0,
    }


def fetch(client: Client, handles: list[Any], collect: str) -> list[Any]:
    """Every result, in order: ``client.gather`` (a few Redis round trips for what is done), or
    ``each``: one ``result()`` call per task, as Huey's, arq's and Dramatiq's harnesses do."""
    results: list[Any] = []
    with tqdm(total=len(handles), desc="results", mininterval=1) as bar:
        if collect == "each":
            for handle in handles:
                results.append(handle.result(timeout=300))
                bar.update()
        else:
            for at in range(0, len(handles), 1000):
                chunk = handles[at : at + 1000]
                results += client.gather(chunk, timeout=300)
                bar.update(len(chunk))
    return results


def drain_backlog(client: Client, pool: Pool, tasks: list[tuple[str, tuple[Any, ...], Any]]) -> tuple[int, int]:
    """Tasks per second the workers complete from a full queue (see ``measure``), and how many of
    their results differ from the expected ones."""
    names = pool.alive()
    for name in names:
        pool.signal(name, signal.SIGSTOP)
    try:
        handles = [client.submit(op, *args) for op, args, _ in tasks]
        client.flush()
    finally:
        for name in names:
            pool.signal(name, signal.SIGCONT)
    start = time.perf_counter()
    results = client.gather(handles, timeout=300)
    rate = round(len(tasks) / (time.perf_counter() - start))
    return rate, sum(1 for (_, _, expected), result in zip(tasks, results, strict=True) if result != expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--dispatch", choices=["shared", "partitioned"], default="shared")
    parser.add_argument("--wait", action="store_true", help="every submit waits for Kafka's acknowledgement")
    parser.add_argument("--stored", type=int, default=0, help="finished tasks stored before the run")
    parser.add_argument("--sleep", type=float, default=0.0, help="tasks are sleep(SECONDS) instead of add(i, i)")
    parser.add_argument("--backlog", action="store_true", help="also time the workers alone on a full queue")
    parser.add_argument(
        "--collect", choices=["gather", "each"], default="gather", help="results by client.gather, or one call each"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()
    summary = measure(
        args.tasks,
        args.workers,
        args.concurrency,
        args.partitions,
        args.wait,
        args.stored,
        args.sleep,
        args.backlog,
        args.collect,
        args.dispatch,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if not summary["verified"]:
        raise SystemExit(f"{summary['wrong_results']} results differ from the ones computed here")


if __name__ == "__main__":
    main()
