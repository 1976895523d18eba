"""Huey on a lab schedule: the peer of ``bench/dispatch.py``, run with the anchors' venv.

    /tmp/anchors-venv/bin/python bench/peers/huey_schedule.py --schedule S.json --out R.json [--workers 4]

The schedule file holds ``arrivals`` and ``services`` (seconds, from the lab's
``Experiment.schedule()``). This file is both the driver and the task module the consumer imports
(``huey_schedule.huey``), so Huey names the task ``huey_schedule.work`` on both sides.

What it does, every wait with a deadline:

1. starts a private ``redis-server`` on a free loopback port (no persistence), as its own child;
2. starts ``huey_consumer huey_schedule.huey -w N -k process -q`` in a session of its own: one
   consumer and N worker processes, all popping (``BRPOP``) one Redis list, i.e. one shared queue;
3. warms up: rounds of short tasks until every worker process has run one;
4. submits task ``i`` (``work(service_i, i)``) at ``t0 + arrival_i`` from one generator thread, open
   loop (never waiting for a result), and records when each submit returned;
5. waits until every task has recorded its finish, or the deadline; then stops the consumer
   (SIGINT, Huey's graceful stop; then SIGKILL to whatever is left of its session, by pid) and
   Redis, and reaps both.

Times match the lab's definitions (``yadtq/lab/result.py``): ``started`` is when the task began in
its worker, ``finished`` is when its result had been stored (a ``post_execute`` hook, which Huey runs
right after ``put_result``), both in seconds from ``t0``; wait and response are taken from the
*scheduled* arrival. Like the lab's ``lab.work``, the task counts its own executions (``INCR``
before its sleep, and after it), so the audit does not rely on Huey's word.

Writes one JSON object: per task ``scheduled, submitted, started, finished, pid, executions,
completions``, plus versions and the generator's lateness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from huey import RedisHuey

PORT = int(os.environ.get("HUEY_SCHEDULE_PORT", "6390"))
HERE = Path(__file__).resolve().parent
TIMES = "bench:times"  # hash: token -> JSON {started, finished, pid}

huey = RedisHuey("dispatch", host="127.0.0.1", port=PORT)
_side = None


def side():
    """The task's own connection (one per worker process), for its execution counts."""
    global _side
    if _side is None:
        import redis

        _side = redis.Redis(host="127.0.0.1", port=PORT, socket_timeout=5)
    return _side


@huey.task()
def work(seconds: float, token: int) -> dict:
    started = time.time()
    side().incr(f"bench:exec:{token}")
    time.sleep(seconds)
    side().incr(f"bench:done:{token}")
    return {"token": token, "started": started, "pid": os.getpid()}


@huey.task()
def warm(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@huey.post_execute()
def _record(task, value, exc) -> None:
    """Runs right after Huey stored the result: the moment it became available to a client."""
    if exc is None and isinstance(value, dict) and "token" in value:
        stamp = {"started": value["started"], "finished": time.time(), "pid": value["pid"]}
        side().hset(TIMES, str(value["token"]), json.dumps(stamp))


# --- processes -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time) of a live process, or None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    return (int(rest[3]), int(rest[19])) if rest[0] != "Z" else None


def session_members(sid: int) -> list[tuple[int, int]]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st and st[0] == sid:
                out.append((int(name), st[1]))
    return out


def stop_session(proc: subprocess.Popen, first: int, grace: float) -> list[int]:
    """Signal ``first`` to the root of ``proc``'s session, wait up to ``grace``, then SIGKILL every
    process still in that session (checked by pid and start time); returns the pids killed."""
    members = set(session_members(proc.pid))
    if proc.poll() is None:
        try:
            os.kill(proc.pid, first)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and session_members(proc.pid):
        time.sleep(0.1)
    members |= set(session_members(proc.pid))
    killed = []
    for pid, start in sorted(members):
        st = _stat(pid)
        if st is not None and st == (proc.pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return killed


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not on PATH")
    log = open(folder / "redis.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import redis

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {proc.returncode}: {(folder / 'redis.log').read_text()[-500:]}"
            )
        try:
            if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                return proc
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    stop_session(proc, signal.SIGTERM, 5)
    raise RuntimeError("redis-server did not answer within 15 s")


def start_consumer(port: int, workers: int, folder: Path) -> subprocess.Popen:
    consumer = Path(sys.executable).parent / "huey_consumer"
    env = {**os.environ, "HUEY_SCHEDULE_PORT": str(port), "PYTHONPATH": str(HERE)}
    log = open(folder / "consumer.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(consumer), "huey_schedule.huey", "-w", str(workers), "-k", "process", "-q"],
        cwd=HERE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# --- the run -----------------------------------------------------------------------------------------
def warm_up(tasks, workers: int, consumer: subprocess.Popen, timeout: float) -> int:
    """Rounds of 2×workers short tasks until every worker process has run one; returns the rounds."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    rounds = 0
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError(f"huey_consumer exited with {consumer.returncode}")
        rounds += 1
        handles = [tasks.warm(0.05) for _ in range(2 * workers)]
        for handle in handles:
            left = max(0.1, deadline - time.monotonic())
            seen.add(handle.get(blocking=True, timeout=left, backoff=1.0, max_delay=0.01))
        if len(seen) >= workers:
            return rounds
    raise RuntimeError(f"only {len(seen)} of {workers} Huey workers ran a warm-up task within {timeout:g} s")


def drive(tasks, arrivals: list[float], services: list[float], lead: float, drain: float) -> dict:
    import redis

    conn = redis.Redis(host="127.0.0.1", port=tasks.PORT)
    n = len(arrivals)
    submitted: list[float | None] = [None] * n
    errors: list[str] = []
    stop = threading.Event()
    t0 = time.time() + lead

    def generate() -> None:
        for i, at in enumerate(arrivals):
            if stop.wait(max(0.0, t0 + at - time.time())):
                return
            try:
                tasks.work(services[i], i)
                submitted[i] = time.time() - t0
            except Exception as exc:  # a refused submit is reported, not fatal
                errors.append(repr(exc))

    generator = threading.Thread(target=generate, name="huey-generator", daemon=True)
    generator.start()
    deadline = t0 + (arrivals[-1] if n else 0.0) + drain
    done = 0
    while time.time() < deadline:
        time.sleep(0.25)
        done = conn.hlen(TIMES)
        if not generator.is_alive() and done >= n - len(errors):
            break
    stop.set()
    generator.join(timeout=10)
    stamps = {int(k): json.loads(v) for k, v in conn.hgetall(TIMES).items()}
    execs = conn.mget([f"bench:exec:{i}" for i in range(n)]) if n else []
    dones = conn.mget([f"bench:done:{i}" for i in range(n)]) if n else []
    rows = []
    for i in range(n):
        stamp = stamps.get(i)
        rows.append(
            {
                "scheduled": arrivals[i],
                "submitted": submitted[i],
                "started": stamp["started"] - t0 if stamp else None,
                "finished": stamp["finished"] - t0 if stamp else None,
                "pid": stamp["pid"] if stamp else None,
                "executions": int(execs[i] or 0),
                "completions": int(dones[i] or 0),
            }
        )
    return {"tasks": rows, "submit_errors": errors, "timed_out": done < n - len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", type=Path, required=True, help="JSON with 'arrivals' and 'services' (s)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--lead", type=float, default=0.3, help="seconds from the end of set-up to the first arrival")
    args = parser.parse_args()
    schedule = json.loads(args.schedule.read_text())
    arrivals, services = schedule["arrivals"], schedule["services"]
    drain = 60.0 + 3 * sum(services) / args.workers

    port = free_port()
    os.environ["HUEY_SCHEDULE_PORT"] = str(port)
    sys.path.insert(0, str(HERE))
    import huey_schedule as tasks  # this file again, as the consumer imports it: same task names

    folder = Path(tempfile.mkdtemp(prefix="huey-schedule-"))
    redis_proc = start_redis(port, folder)
    consumer = None
    try:
        consumer = start_consumer(port, args.workers, folder)
        rounds = warm_up(tasks, args.workers, consumer, timeout=60.0)
        time.sleep(0.5)
        outcome = drive(tasks, arrivals, services, args.lead, drain)
    finally:
        killed = stop_session(consumer, signal.SIGINT, 15) if consumer is not None else []
        stop_session(redis_proc, signal.SIGTERM, 10)
    import huey as huey_package
    import redis as redis_package

    outcome.update(
        {
            "workers": args.workers,
            "warm_up_rounds": rounds,
            "killed_after_stop": killed,
            "versions": {"huey": huey_package.__version__, "redis-py": redis_package.__version__},
            "python": sys.version.split()[0],
        }
    )
    if outcome["timed_out"] or outcome["submit_errors"] or killed:
        outcome["logs"] = str(folder)  # kept for a look
    else:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.write_text(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
