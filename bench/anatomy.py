"""Where the time of one task goes: each step of its path measured on its own, in microseconds.

    python bench/anatomy.py [--n 2000]

Client: building and checking the message, handing it to Kafka's producer, recording it in Redis
(alone, and per record in a batch). Redis: one script round trip, and one claim+finish pipeline per
task in a batch. Executor: a task's round trip through the child process. And end to end: an idle
round trip split at the timestamps the state machine records (submit -> claim -> stored -> client),
beside the floor kafka-python alone sets for its first step (``kafka_alone.latency``).
Writes bench/results/anatomy.json.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka_alone import latency, percentiles
from throughput import RESULTS, scratch

from yadtq import Config, TaskStatus
from yadtq.store.backend import Settlement
from yadtq.worker.executor import Executor


def per_call(n: int, call: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return round((time.perf_counter() - start) / n * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    n = args.n
    config = Config.from_env(namespace=f"anat{uuid.uuid4().hex[:8]}", log_level="WARNING")
    out: dict[str, Any] = {}
    with scratch(config) as (client, _):
        client.broker.ensure_topics()
        backend = client.backend
        msgs = [client.build("add", [i, i]) for i in range(n)]
        out["client: build and check a message"] = per_call(n, lambda i: client.build("add", [i, i]))
        out["client: producer.send (batched, no wait)"] = per_call(
            n, lambda i: client.broker.send(msgs[i].encode(), key=msgs[i].id)
        )
        client.broker.flush()
        out["client: send and wait for Kafka's ack"] = per_call(
            n // 4, lambda i: client.broker.publish(msgs[i].encode(), key=msgs[i].id)
        )
        out["redis: one script call (SUBMIT, a round trip)"] = per_call(n // 4, lambda i: backend.submit(msgs[i]))
        start = time.perf_counter()
        backend.record(msgs)
        out["redis: SUBMIT per record in a batch"] = round((time.perf_counter() - start) / n * 1e6, 1)
        start = time.perf_counter()
        _, claims = backend.exchange("anatomy", [], msgs)
        done = [
            Settlement(m.id, c.attempt, TaskStatus.SUCCESS, 2 * i)
            for i, (m, c) in enumerate(zip(msgs, claims, strict=True))
        ]
        backend.exchange("anatomy", done, [])
        out["redis: CLAIM + FINISH per task in a batch"] = round((time.perf_counter() - start) / n * 1e6, 1)
        out["redis: result read (HMGET)"] = per_call(n, lambda i: backend.outcomes([msgs[i].id]))

    executor = Executor()
    executor.start()
    executor.submit("add", [0, 0], {})
    executor.wait(10)

    def round_trip(i: int) -> None:
        executor.submit("add", [i, i], {})
        executor.wait(10)

    out["executor: one task's round trip through the child"] = per_call(n, round_trip)
    executor.close()
    out["kafka: bare kafka-python send -> poll (the floor of submit -> claimed)"] = latency(config)
    out["end to end (idle)"] = end_to_end(config.replace(namespace=f"anat{uuid.uuid4().hex[:8]}"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "anatomy.json").write_text(json.dumps(out, indent=2) + "\n")
    for key, value in out.items():
        print(f"{key:55} {value}")


def end_to_end(config: Config, n: int = 200) -> dict[str, dict[str, float]]:
    """Idle round trips split at the timestamps the state machine records, and whole: µs, median
    and 99th percentile of each."""
    steps: dict[str, list[float]] = {
        "submit -> claimed": [],
        "claimed -> stored": [],
        "stored -> client has it": [],
        "total": [],
    }
    with scratch(config) as (client, pool):
        pool.start(1)
        deadline = time.monotonic() + 60
        while not len(client.workers(live_only=True)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for i in range(n + 20):
            t0 = time.time()
            handle = client.submit("add", i, i)
            handle.result(timeout=30)
            t3 = time.time()
            history = {h["status"]: h["at"] for h in handle.history()}
            if i >= 20:  # warm
                steps["submit -> claimed"].append(history["processing"] - t0)
                steps["claimed -> stored"].append(history["success"] - history["processing"])
                steps["stored -> client has it"].append(t3 - history["success"])
                steps["total"].append(t3 - t0)
    return {name: percentiles(values) for name, values in steps.items()}


if __name__ == "__main__":
    main()
