"""CPU per task, by process: where a drain's CPU goes, and what bounds the rate on this machine.

    python bench/cpu_budget.py [--tasks 5000] [--workers 2]

Submits ``add(i, i)`` one call at a time (the workload of bench/compare.py), fetches every result,
and reads each process's CPU time (user + system, from /proc) before and after: the Kafka broker,
Redis, the workers, their executors and this client. On a machine of C cores, no drain can be
faster than C seconds of CPU divided by the CPU one task costs in all of them together; the rows
say which process to make cheaper. Then the same for submitting alone, with no worker running
(until Kafka acknowledged and Redis recorded every task): the bound on the enqueue rate.
Writes bench/results/cpu_budget.json. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from throughput import RESULTS, scratch, start_warm

from yadtq import Config

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10).stdout
    return [int(p) for p in out.split()]


def cpu_of(processes: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds spent so far by each group of processes."""
    return {name: sum(map(cpu_seconds, pids)) for name, pids in processes.items()}


def cpu_use(
    before: dict[str, float], after: dict[str, float], count: int, wall: float, rate: str, unit: str
) -> dict[str, Any]:
    """What ``count`` units of work (tasks, submits, messages) done in ``wall`` seconds cost: the rate
    measured (``rate``), µs of CPU per unit of each group of processes (``cpu_us_per_<unit>``) and
    their sum (``..._total``), and the rate that sum allows on this machine's cores
    (``cpu_bound_<rate>``)."""
    per_unit = {name: round((after[name] - before[name]) / count * 1e6) for name in before}
    total = sum(per_unit.values())
    return {
        rate: round(count / wall),
        f"cpu_us_per_{unit}": per_unit,
        f"cpu_us_per_{unit}_total": total,
        f"cpu_bound_{rate}": round((os.cpu_count() or 1) / (total / 1e6)),
    }


def print_use(result: dict[str, Any], rate: str, unit: str) -> None:
    """The rows of :func:`cpu_use`'s part of ``result``."""
    for name, us in result[f"cpu_us_per_{unit}"].items():
        print(f"  {name:14} {us:6,} µs of CPU per {unit}")
    total, bound = result[f"cpu_us_per_{unit}_total"], result[f"cpu_bound_{rate}"]
    print(f"  {'all':14} {total:6,} µs: at most {bound:,}/s on {os.cpu_count() or 1} cores")


def service_pid(config: Config, name: str) -> int:
    state = json.loads(config.services_file.read_text())
    return int(state[f"{name}_pid"])


def measure_submit(tasks: int) -> dict[str, Any]:
    """CPU per submit in the client, Redis and the broker, with no worker taking anything."""
    config = Config.from_env(namespace=f"cpu{uuid.uuid4().hex[:8]}", log_level="WARNING")
    with scratch(config) as (client, _):
        client.submit_with("add", (0, 0), wait=True)  # topics made, producer and outbox connected
        processes = {
            "kafka broker": [service_pid(config, "kafka")],
            "redis": [service_pid(config, "redis")],
            "client": [os.getpid()],
        }
        before = cpu_of(processes)
        start = time.perf_counter()
        for i in range(tasks):
            client.submit("add", i, i)
        client.flush()
        wall = time.perf_counter() - start
        after = cpu_of(processes)
    return cpu_use(before, after, tasks, wall, "enqueue_per_s", "submit")


def measure(tasks: int, workers: int) -> dict[str, Any]:
    config = Config.from_env(namespace=f"cpu{uuid.uuid4().hex[:8]}", log_level="WARNING")
    with scratch(config) as (client, pool):
        started = start_warm(client, pool, workers)
        worker_pids = [w.pid for w in started]
        processes = {
            "kafka broker": [service_pid(config, "kafka")],
            "redis": [service_pid(config, "redis")],
            "workers": worker_pids,
            "executors": [c for pid in worker_pids for c in children(pid)],
            "client": [os.getpid()],
        }
        before = cpu_of(processes)
        start = time.perf_counter()
        handles = [client.submit("add", i, i) for i in range(tasks)]
        assert client.gather(handles, timeout=300) == [2 * i for i in range(tasks)]
        wall = time.perf_counter() - start
        after = cpu_of(processes)
    return {
        "tasks": tasks,
        "workers": workers,
        **cpu_use(before, after, tasks, wall, "drain_per_s", "task"),
        "cores": os.cpu_count() or 1,
        "load_avg": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = measure(args.tasks, args.workers)
    result["submit_alone"] = submit = measure_submit(args.tasks)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_budget.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"drain {result['drain_per_s']}/s over {result['tasks']} tasks, {result['workers']} workers")
    print_use(result, "drain_per_s", "task")
    print(f"submitting alone, no worker running: {submit['enqueue_per_s']}/s")
    print_use(submit, "enqueue_per_s", "submit")


if __name__ == "__main__":
    main()
