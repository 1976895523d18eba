"""How throughput scales: workers, concurrency, partitions, stored history (issue figures in docs/performance.md).

    python bench/scaling.py [--tasks 5000] [--only workers,io,partitions,history]

- workers: 1, 2, 4 and 8 workers on ``add(i, i)`` (CPU-light: the queue's own cost);
- io: ``sleep(0.01)`` tasks, 8 workers of one slot (ideal 800/s), of 2 and of 4 slots, and 2 workers
  of 4 slots (each with the workers' own rate from a full queue, ``backlog_drain_per_s``, beside the
  end-to-end one);
- partitions: 8 workers over 4 partitions (half of them idle) and over 16;
- history: the same run with 10,000 and with 1,000,000 finished tasks already stored.

Writes bench/results/scaling.json (the groups not run keep their figures from the last run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from throughput import RESULTS, measure

RUNS: dict[str, list[dict[str, Any]]] = {
    "workers": [{"workers": n, "backlog": True} for n in (1, 2, 4, 8)],
    "io": [
        {"workers": 8, "sleep": 0.01, "backlog": True},
        {"workers": 8, "concurrency": 2, "sleep": 0.01, "backlog": True},
        {"workers": 8, "concurrency": 4, "sleep": 0.01, "backlog": True},
        {"workers": 2, "concurrency": 4, "sleep": 0.01, "backlog": True},
    ],
    "partitions": [{"workers": 8, "partitions": 4}, {"workers": 8, "partitions": 16}],
    "history": [{"workers": 2, "stored": 10_000}, {"workers": 2, "stored": 1_000_000}],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--only", default=",".join(RUNS))
    args = parser.parse_args()
    path: Path = RESULTS / "scaling.json"
    # the groups not run this time keep their last figures
    out: dict[str, list[dict[str, Any]]] = json.loads(path.read_text()) if path.exists() else {}
    for group in args.only.split(","):
        out[group] = []
        for settings in RUNS[group]:
            tasks = min(args.tasks, 2000) if settings.get("sleep") else args.tasks
            result = measure(tasks=tasks, **settings)
            print(group, json.dumps(result))
            out[group].append(result)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
