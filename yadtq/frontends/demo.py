"""``yadtq demo``: the whole system in one command, for a classroom or a first look.

Services up, three worker processes, a batch of mixed tasks (one of them fails on purpose, and one
mistake is refused before it is sent), a progress bar while they run, then the task and worker
tables. Kafka and Redis keep running afterwards so the terminal commands can be tried on the data.
"""

from __future__ import annotations

import itertools
import time

from tqdm import tqdm

from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.core.errors import InvalidTask, TaskFailed, TaskTimeout
from yadtq.frontends.tables import render
from yadtq.processes import services
from yadtq.processes.pool import Pool

MIX = [
    ("add", [2, 3]),
    ("mul", [6, 7]),
    ("div", [1, 0]),  # fails on purpose: the worker records the error and goes on
    ("factorial", [20]),
    ("fibonacci", [50]),
    ("is_prime", [1_000_000_007]),
    ("mean", [[1, 2, 3, 4]]),
    ("pow", [2, 64]),
    ("gcd", [1071, 462]),
    ("sleep", [0.3]),
]


def run_demo(config: Config, workers: int = 3, tasks: int = 30) -> None:
    state = services.up(config)
    config = config.replace(kafka_bootstrap=state["kafka_bootstrap"], redis_url=state["redis_url"])
    with Client(config) as client, Pool(config) as pool:
        print(f"\nStarting {workers} workers (logs in {pool.log_dir})")
        names = [w.name for w in pool.start(workers, prefix=time.strftime("w%H%M%S"))]
        _wait_for_workers(client, names, timeout=60)
        try:
            client.submit("factorial", 10**6)
        except InvalidTask as exc:
            print(f"Refused before sending, as it should be: {exc}")
        handles = [client.submit(op, *args) for op, args in itertools.islice(itertools.cycle(MIX), tasks)]
        failed = 0
        for handle in tqdm(handles, desc="tasks", unit="task"):
            try:
                handle.result(timeout=60)
            except (TaskFailed, TaskTimeout):
                failed += 1
        frame = client.tasks(limit=tasks)
        frame["id"] = frame["id"].str[:8]
        print("\nTasks (newest first):")
        print(render(frame[["id", "op", "args", "status", "result", "error", "worker", "attempts"]], width=28))
        print(f"\n{tasks - failed} succeeded, {failed} failed (division by zero, on purpose).")
        time.sleep(config.heartbeat_interval * 1.5)  # one more heartbeat, so states are current
        print("\nWorkers:")
        frame = client.workers()
        frame = frame[frame["name"].isin(names)]
        print(render(frame[["name", "pid", "state", "processed", "failed", "partitions", "last_heartbeat"]]))
    print(
        "\nWorkers stopped. Kafka and Redis are still running: try `yadtq worker` in one terminal and "
        "`yadtq submit add 2 3 --wait` in another; `yadtq down` stops the services."
    )


def _wait_for_workers(client: Client, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with tqdm(total=len(names), desc="workers joining", unit="worker") as bar:
        while time.monotonic() < deadline:
            frame = client.workers()
            ready = int((frame["name"].isin(names) & frame["state"].isin(["idle", "busy"])).sum())
            bar.update(ready - bar.n)
            if ready >= len(names):
                return
            time.sleep(0.2)
    raise TaskTimeout(f"workers did not join within {timeout:g}s; see their logs")
