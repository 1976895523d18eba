"""Soak: a long run under repeated faults, audited with an execution count kept outside the queue.

    python bench/soak.py                          # 100,000 tasks over about 10 minutes
    python bench/soak.py --tasks 20000 --minutes 3

Not a CI test: it takes minutes and loads the machine. It starts a Kafka and a Redis of its own
(under a temporary home, on ports of their own), because it SIGKILLs them: the shared services of
the machine are never touched. During the run:

- tasks (``lab.work``, which counts each execution with an ``INCR`` outside the state machine) are
  submitted at an even rate, through the fast path (batched; a refusal shows at the end);
- every ``--kill-every`` seconds a busy worker is SIGKILLed and a replacement started at once;
- at a third of the run Redis is SIGKILLed (restarted 2 s later), at two thirds Kafka is;
- a worker that dies on its own is replaced too, as a supervisor would, and reported.

At the end every accepted task must be final; the audit (tasks, attempts, executions, results,
lost, duplicated) is printed and written to ``bench/results/soak.json``. Tasks that Kafka refused
(their submit failed during the outage) are left out of the audit, but must have run zero times.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from yadtq import Client, Config, Pool, ServiceUnavailable  # noqa: E402
from yadtq.client.client import TaskHandle  # noqa: E402
from yadtq.lab.audit import audit, execution_counts  # noqa: E402
from yadtq.processes import services  # noqa: E402

RESULTS = ROOT / "bench" / "results"
#: Ports of the soak's own services, away from the defaults and from the tests' private ones.
PORTS = {"kafka_port": 29092, "kafka_controller_port": 29093, "redis_port": 26379}


@contextmanager
def closing_quietly(client: Client) -> Iterator[Client]:
    """Close the client at the end, and report rather than raise a close that fails: after a Kafka
    SIGKILL the producer can hold messages it never resolves, and its close then times out."""
    try:
        yield client
    finally:
        try:
            client.close()
        except Exception as exc:  # the figures matter more than a clean close
            print(f"  client close: {type(exc).__name__}: {exc}")


def private_services(home: Path) -> Config:
    """Start a Kafka and a Redis of the soak's own; the broker's jars are linked from the default home."""
    base = Config.from_env()
    config = base.replace(home=home, **PORTS)
    jars = Path(base.home) / f"kafka-{config.kafka_version}"
    if jars.is_dir():
        (home / jars.name).symlink_to(jars.absolute(), target_is_directory=True)
    state = services.up(config, say=lambda line: print(f"  {line}"))
    return config.replace(kafka_bootstrap=state["kafka_bootstrap"], redis_url=state["redis_url"])


def busy_victim(client: Client, pool: Pool) -> str | None:
    frame = client.workers()
    busy = frame[(frame["state"] == "busy") & frame["name"].isin(pool.alive())]
    return str(random.choice(list(busy["name"]))) if len(busy) else None


def supervise(pool: Pool, workers: int, killed: set[str]) -> list[str]:
    """Start a replacement for every worker that died on its own (as systemd or a container's
    restart policy would); returns the names of those that did. Our own kills are replaced at once."""
    crashed = [name for name, proc in pool.processes.items() if not proc.alive and name not in killed]
    for name in crashed:
        killed.add(name)  # counted once
    missing = workers - len(pool.alive())
    if missing > 0:
        pool.start(missing)
    return crashed


def crash(services_config: Config, name: str, down_for: float = 2.0) -> float:
    """SIGKILL one service, start it again on the same port and data; returns how long it took."""
    began = time.monotonic()
    services.stop(services_config, name, signal=signal.SIGKILL)
    time.sleep(down_for)
    services.start(services_config, name)
    return time.monotonic() - began


def run(args: argparse.Namespace, services_config: Config) -> dict[str, Any]:
    config = services_config.replace(
        namespace=f"soak{uuid.uuid4().hex[:8]}",
        imports=("yadtq.lab.probe",),
        concurrency=args.concurrency,
        log_level="WARNING",
    )
    duration = args.minutes * 60
    rate = args.tasks / duration
    events: list[dict[str, Any]] = []
    handles: dict[str, tuple[TaskHandle, str]] = {}  # task id -> (its handle, its token)
    client = Client(config)
    with closing_quietly(client), Pool(config, log_dir=Path(config.home) / "logs" / "workers") as pool:
        pool.start(args.workers)
        deadline = time.monotonic() + 120
        while (client.workers()["state"] == "idle").sum() < args.workers:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not start within 120 s")
            time.sleep(0.2)
        began = time.monotonic()
        next_kill = began + args.kill_every
        faults = {"redis": began + duration / 3, "kafka": began + 2 * duration / 3}
        submitted = 0
        refused_at_submit = 0
        gone: set[str] = set()  # workers we killed, or already counted as crashed
        crashed: list[str] = []
        bar = tqdm(total=args.tasks, desc="submitted", unit="task", mininterval=1)
        while submitted < args.tasks:
            now = time.monotonic()
            due = min(args.tasks, int((now - began) * rate) + 1)
            bar.update(due - submitted)
            while submitted < due:
                token = f"s{submitted}"
                try:
                    handle = client.submit("lab.work", args.task_seconds, token)
                    handles[handle.id] = (handle, token)
                except ServiceUnavailable:
                    refused_at_submit += 1
                submitted += 1
            if now >= next_kill:
                victim = busy_victim(client, pool)
                if victim is not None:
                    gone.add(victim)
                    pool.kill(victim)
                    pool.start(1)
                    events.append({"at": round(now - began, 1), "fault": "SIGKILL worker", "worker": victim})
                next_kill = now + args.kill_every
            for name, when in list(faults.items()):
                if now >= when:
                    del faults[name]
                    took = crash(services_config, name)
                    events.append(
                        {"at": round(now - began, 1), "fault": f"SIGKILL {name}", "back_after": round(took, 1)}
                    )
            crashed += supervise(pool, args.workers, gone)
            time.sleep(0.05)
        bar.close()
        submit_seconds = time.monotonic() - began
        accepted: dict[str, str] = {}
        refused: dict[str, str] = {}
        unresolved: dict[str, str] = {}  # neither acknowledged nor refused by the deadline
        answer_by = time.monotonic() + config.submit_timeout + 30
        for task_id, (handle, token) in handles.items():
            try:
                handle.accepted(timeout=max(0.01, answer_by - time.monotonic()))
                accepted[task_id] = token
            except ServiceUnavailable:
                (refused if handle._sent is not None and handle._sent.is_done else unresolved)[task_id] = token
        try:
            client.flush()
        except ServiceUnavailable as exc:
            print(f"  flush: {exc}")
        settle_deadline = time.monotonic() + args.settle
        bar = tqdm(total=len(accepted), desc="final", unit="task", mininterval=1)
        while time.monotonic() < settle_deadline:
            crashed += supervise(pool, args.workers, gone)
            try:
                unfinished = audit(client.backend, accepted).unfinished
                bar.update(len(accepted) - unfinished - bar.n)
                if unfinished == 0:
                    break
            except ServiceUnavailable:
                pass
            time.sleep(2)
        bar.close()
        done_seconds = time.monotonic() - began
        report = audit(client.backend, accepted, executions=execution_counts(client.backend, accepted))
        refused_runs = sum(execution_counts(client.backend, {**refused, **unresolved}).values())
        unresolved_records = [client.backend.task(task_id) for task_id in list(unresolved)[:1000]]
        workers = client.workers()
        client.backend.purge()
    return {
        "command": " ".join(sys.argv),
        "tasks_submitted": submitted,
        "accepted": len(accepted),
        "refused_by_kafka": len(refused),
        "unresolved_by_kafka": len(unresolved),
        "unresolved_records": dict(
            collections.Counter((client_record or {}).get("status", "none") for client_record in unresolved_records)
        ),
        "refused_at_submit": refused_at_submit,
        "executions_of_refused_or_unresolved": refused_runs,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "task_seconds": args.task_seconds,
        "worker_kills": sum(1 for e in events if e["fault"] == "SIGKILL worker"),
        "faults": events,
        "workers_that_died_on_their_own": crashed,
        "submit_seconds": round(submit_seconds, 1),
        "all_final_after_seconds": round(done_seconds, 1),
        "workers_started": len(workers),
        "audit": report.as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--task-seconds", type=float, default=0.01)
    parser.add_argument("--kill-every", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=600.0, help="longest wait for the last tasks, in seconds")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="yadtq-soak-"))
    print(f"soak: {args.tasks} tasks over {args.minutes:g} min, services under {home}")
    services_config = private_services(home)
    try:
        result = run(args, services_config)
    finally:
        services.down(services_config, say=lambda line: print(f"  {line}"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    audit_ = result["audit"]
    ok = (
        audit_["lost"] == audit_["duplicates"] == audit_["unfinished"] == 0
        and result["executions_of_refused_or_unresolved"] == 0
        # a submit Kafka never answered is withdrawn: the caller is told, and no record waits for it
        and set(result["unresolved_records"]) <= {"none"}
    )
    print("soak:", "clean" if ok else "NOT CLEAN")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
