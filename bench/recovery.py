"""How fast a SIGKILLed worker's in-flight task is finished by another worker, with default settings.

    python bench/recovery.py [--trials 5] [--task-seconds 1.0]

Each trial: two workers, one `sleep` task; 0.3 s after it starts, its worker is SIGKILLed and a
replacement started (as the anchors' fault test does). Measured from the kill: when another worker
restarted the task, and when its result was stored. Writes bench/results/recovery.json.
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
from yadtq.transport.broker import Broker

RESULTS = Path(__file__).resolve().parent / "results"


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(what)


def trial(task_seconds: float) -> dict[str, float]:
    config = Config.from_env(namespace=f"bench{uuid.uuid4().hex[:8]}")
    with Client(config) as client, Pool(config) as pool:
        try:
            pool.start(2)
            wait(lambda: (client.workers()["state"] == "idle").sum() == 2, 60, "two idle workers")
            handle = client.submit("sleep", task_seconds)
            victim = wait(lambda: (handle.info() or {}).get("worker"), 30, "the task to start")
            time.sleep(0.3)
            pool.kill(victim)
            killed = time.time()
            pool.start(1)
            handle.result(timeout=60)
            restart = next(h["at"] for h in handle.history() if h["status"] == "processing" and h["attempt"] == 2)
            return {"restarted_after": restart - killed, "finished_after": handle.info()["finished_at"] - killed}
        finally:
            pool.close()
            client.backend.purge()
            Broker(config).delete_topics()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--task-seconds", type=float, default=1.0)
    args = parser.parse_args()
    defaults = Config()
    runs = [trial(args.task_seconds) for _ in tqdm(range(args.trials), desc="kill trials")]
    summary = {
        "settings": {
            "heartbeat_interval": defaults.heartbeat_interval,
            "heartbeat_timeout": defaults.heartbeat_timeout,
            "task_seconds": args.task_seconds,
            "killed_after": 0.3,
        },
        "runs": runs,
        "median_restarted_after": statistics.median(r["restarted_after"] for r in runs),
        "max_restarted_after": max(r["restarted_after"] for r in runs),
        "median_finished_after": statistics.median(r["finished_after"] for r in runs),
        "max_finished_after": max(r["finished_after"] for r in runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recovery.json").write_text(json.dumps(summary, indent=2))
    print(f"{'trial':>5} {'restarted after (s)':>20} {'finished after (s)':>19}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>5} {r['restarted_after']:>20.2f} {r['finished_after']:>19.2f}")
    print(
        f"median restart {summary['median_restarted_after']:.2f} s, max {summary['max_restarted_after']:.2f} s; "
        f"median finish {summary['median_finished_after']:.2f} s, max {summary['max_finished_after']:.2f} s"
    )


if __name__ == "__main__":
    main()
