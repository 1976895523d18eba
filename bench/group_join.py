"""How long two fresh workers take to both hold partitions, optionally with the CPU kept busy.

    python bench/group_join.py [--trials 50] [--burners 4]

Measures the stranded-consumer watchdog (`Worker._stranded`): under CPU load kafka-python 3.0 can
lose a SyncGroup response, leaving one consumer outside the group while it keeps polling. Each trial
starts two workers in threads of this process (so their consumers can be inspected) in a fresh
namespace and records the time until both hold partitions. Writes bench/results/group_join.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from yadtq import Client, Config, Worker
from yadtq.transport.broker import Broker

RESULTS = Path(__file__).resolve().parent / "results"


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def trial(timeout: float) -> float | None:
    """Seconds until both workers hold partitions, or None if not within ``timeout``."""
    config = Config.from_env(namespace=f"join{uuid.uuid4().hex[:8]}", heartbeat_interval=0.5, heartbeat_timeout=2.0)
    workers = [Worker(config, name=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    started = time.monotonic()
    for t in threads:
        t.start()
    took = None
    while time.monotonic() - started < timeout:
        if all(w.partitions for w in workers):
            took = time.monotonic() - started
            break
        time.sleep(0.05)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(30)
    Client(config).backend.purge()
    Broker(config).delete_topics()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--burners", type=int, default=4, help="busy-looping processes during the run")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, args=(3600,), daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    try:
        times = [trial(args.timeout) for _ in tqdm(range(args.trials), desc="trials")]
    finally:
        for b in burners:
            b.kill()
            b.join(5)
    joined = [t for t in times if t is not None]
    slow = [t for t in joined if t > 5]
    summary = {
        "trials": args.trials,
        "burners": args.burners,
        "never_joined": times.count(None),
        "median_s": statistics.median(joined) if joined else None,
        "slow_over_5s": len(slow),
        "slow_times_s": [round(t, 1) for t in slow],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "group_join.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
