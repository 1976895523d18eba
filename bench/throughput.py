"""Throughput and latency on the workload of ../shared/bench-anchors (Celery, RQ, Dramatiq, Huey, arq).

    python bench/throughput.py [--tasks 10000] [--workers 2]

Same method as the anchors: fresh workers, a verified warm-up of 200 `add` tasks, then `add(i, i)` for
i < N submitted one call at a time while the workers consume, then every result fetched in order
(each checked, and the sum); then 200 sequential round trips for latency. Writes
bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from yadtq import Client, Config, Pool
from yadtq.broker import Broker

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = Config.from_env(namespace=f"tput{uuid.uuid4().hex[:8]}", log_level="WARNING")
    with Client(config) as client, Pool(config) as pool:
        try:
            pool.start(args.workers)
            deadline = time.monotonic() + 60
            while (client.workers()["state"] == "idle").sum() < args.workers and time.monotonic() < deadline:
                time.sleep(0.1)
            warm = [client.submit("add", i, i) for i in range(200)]
            assert [h.result(timeout=60) for h in warm] == [2 * i for i in range(200)]
            time.sleep(1)

            start = time.perf_counter()
            handles = [client.submit("add", i, i) for i in tqdm(range(args.tasks), desc="submit")]
            enqueued = time.perf_counter()
            results = [h.result(timeout=300) for h in tqdm(handles, desc="results")]
            drained = time.perf_counter()
            assert results == [2 * i for i in range(args.tasks)]
            assert sum(results) == args.tasks * (args.tasks - 1)

            time.sleep(1)
            latencies = []
            for i in range(200):
                t0 = time.perf_counter()
                assert client.submit("add", i, i).result(timeout=60) == 2 * i
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            pool.close()
            client.backend.purge()
            Broker(config).delete_topics()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    summary = {
        "tasks": args.tasks,
        "workers": args.workers,
        "enqueue_per_s": round(args.tasks / (enqueued - start)),
        "drain_per_s": round(args.tasks / (drained - start)),
        "latency_ms": {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2)},
        "verified": True,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
