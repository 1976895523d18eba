"""Crashes and freezes of the services themselves, on this session's private Kafka and Redis.

- SIGKILL of Redis and of Kafka in the middle of a run: nothing lost, nothing finished twice, by
  the audit's independent execution count (``lab.work``);
- what Redis's ``appendfsync`` setting loses when the Redis process is SIGKILLed, ``everysec``
  (the bundled Redis's setting) against ``always``, measured on a Redis of the test's own;
- no late delivery: a submit that raised while Kafka was frozen never runs, even though the frozen
  broker may still append its message when it resumes.

These never touch the shared services: see the ``private_services`` fixture in conftest.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from tests.conftest import live_workers, record_figures, submit_until_accepted
from tests.ops_fixture import executions_key
from yadtq import Client, ServiceUnavailable
from yadtq.client.client import OVERDUE_AFTER
from yadtq.core.config import Config
from yadtq.lab.audit import Audit, audit, execution_counts
from yadtq.processes import services
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]
PROBE = ("tests.ops_fixture", "yadtq.lab.probe")


def counted_executions(client: Client, tokens: dict[str, str]) -> dict[str, int]:
    """Each task's executions as ``counted`` recorded them (one set member per execution)."""
    pipe = client.backend.redis.pipeline(transaction=False)
    for token in tokens.values():
        pipe.scard(executions_key(client.config.namespace, token))
    return {task_id: int(n) for task_id, n in zip(tokens, pipe.execute(), strict=True)}


def settle(client: Client, tokens: dict[str, str], timeout: float) -> Audit:
    """Audit (with the independent count) until nothing is unfinished or the deadline passes,
    tolerating a service that is still coming back."""
    deadline = time.monotonic() + timeout
    report = Audit()
    while time.monotonic() < deadline:
        try:
            report = audit(client.backend, tokens)
            if report.unfinished == 0:
                # Counts read only now that every task is final: read earlier, a task that ran
                # between the count and its record would look like a result without an execution.
                return audit(client.backend, tokens, executions=counted_executions(client, tokens))
        except ServiceUnavailable:
            time.sleep(0.5)
            continue
        time.sleep(0.5)
    return report


def explain(client: Client, report: Audit, most: int = 3) -> str:
    """The problems, with the record and history of the first few tasks named in them."""
    lines = list(report.problems)
    for problem in report.problems[:most]:
        task_id = problem.split(":")[0]
        lines.append(f"{task_id}: {client.backend.task(task_id)} {client.backend.history(task_id)}")
    return "\n".join(lines)


@pytest.mark.parametrize("service", ["redis", "kafka"])
def test_tasks_survive_a_sigkill_of_a_service_mid_run(
    service: str, private_services: Config, make_private: Callable[..., Config], tmp_path: Path, wait_for
) -> None:
    # shed_after=0: under CPU load a slow first task can make every worker shed its partitions, and
    # the rebalance that hands them straight back trips a known defect of its own (fetched messages
    # are dropped: test_rebalance_keeps_fetched.py). This test is about the service crash.
    config = make_private(imports=PROBE, shed_after=0.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(3)
        wait_for(live_workers(client, 3), timeout=60, what="3 workers")
        # ``counted``, not ``lab.work``: its count survives the Redis crash (see ops_fixture.py)
        tokens = {client.submit("counted", 0.05, f"k{i}").id: f"k{i}" for i in range(300)}
        client.flush()
        wait_for(lambda: audit(client.backend, tokens).succeeded >= 20, timeout=60, what="the run to be under way")
        done_before = audit(client.backend, tokens).succeeded
        services.stop(private_services, service, signal=signal.SIGKILL)
        time.sleep(2)
        services.start(private_services, service)
        report = settle(client, tokens, timeout=180)
        record_figures(
            f"{service}_sigkill",
            {"succeeded_before_kill": done_before, "appendfsync": "everysec", **report.as_dict()},
        )
        assert done_before < 300, "the crash came too late to test anything"
        assert report.clean, explain(client, report)
        assert (report.succeeded, report.results, report.lost, report.duplicates) == (300, 300, 0, 0), report
        # A crash of a service kills no worker, so no task needs a second execution.
        assert (report.executions, report.duplicated) == (300, 0), report.problems
        assert sorted(pool.alive()) == sorted(pool.processes), "a worker died during the crash"
        assert submit_until_accepted(client, 60).result(timeout=60) == 3, "workers stopped consuming"


# --- what appendfsync loses ---------------------------------------------------------------------
class ScratchRedis:
    """A redis-server of one test, with the bundled Redis's AOF settings but a chosen appendfsync."""

    def __init__(self, data: Path, port: int, appendfsync: str) -> None:
        self.data, self.port, self.appendfsync = data, port, appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> redis.Redis:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is needed"
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data), "--appendonly", "yes"]
        cmd += ["--appendfsync", self.appendfsync, "--save", "", "--daemonize", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{self.port}/0"
        assert services.redis_ready(url, 15), "the scratch Redis did not start"
        return redis.Redis.from_url(url, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def scratch_redis(tmp_path: Path) -> Iterator[Callable[[str], ScratchRedis]]:
    made: list[ScratchRedis] = []

    def make(appendfsync: str) -> ScratchRedis:
        server = ScratchRedis(tmp_path / appendfsync, 16500 + len(made) + os.getpid() % 300, appendfsync)
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


def longest_fsync(directory: Path, seconds: float, chunk: int = 128 * 1024) -> float:
    """For ``seconds``, append ``chunk`` bytes (about a second of the test's AOF) to a file in
    ``directory`` and ``fdatasync`` it, ten times a second: the longest one, in seconds, measured on
    the disk the AOF is on while Redis writes it."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    longest, data, deadline = 0.0, b"x" * chunk, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            os.write(fd, data)
            began = time.perf_counter()
            os.fdatasync(fd)
            longest = max(longest, time.perf_counter() - began)
            time.sleep(0.1)
    finally:
        os.close(fd)
        path.unlink()
    return longest


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_what_a_redis_sigkill_loses_with_each_appendfsync(appendfsync: str, scratch_redis) -> None:
    """Writes acknowledged before a SIGKILL of the Redis process, against what the restarted Redis
    has. Each write is acknowledged before the next is sent, as a worker's scripts are.

    What each mode may lose to a crash of the *process*, by its own rules: Redis writes the AOF
    buffer to the file (the kernel's page cache, which outlives the process) before it sends the
    replies. With ``always`` it also fsyncs first: nothing acknowledged may be lost. With
    ``everysec`` the fsync runs in the background once a second, and while it runs Redis holds the
    write back (for up to 2 s on a disk that slow) and still replies: the writes acknowledged during
    one such fsync are the most a process crash may lose. The test measures how long an fsync takes
    on this disk during the run and allows the writes of twice that, plus 10 ms; a loss of the last
    second, which is what ``everysec`` loses to a crash of the machine, breaks that bound. Either
    way the restarted Redis may hold one write more than was acknowledged: the one in flight."""
    server = scratch_redis(appendfsync)
    client = server.start()
    acknowledged = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal acknowledged
        while not stop.is_set():
            try:
                acknowledged = int(client.incr("n"))
            except (redis.RedisError, OSError):
                return

    writer = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    writer.start()
    fsync = longest_fsync(server.data, 2.0)  # the run itself: 2 s of writes
    server.kill()  # SIGKILL, mid-stream
    elapsed = time.monotonic() - started
    stop.set()
    writer.join(timeout=10)
    assert not writer.is_alive()
    client.close()
    recovered = int(server.start().get("n") or 0)
    lost = acknowledged - recovered
    rate = acknowledged / elapsed
    allowed = 0 if appendfsync == "always" else math.ceil(rate * (2 * fsync + 0.01))
    record_figures(
        f"redis_sigkill_appendfsync_{appendfsync}",
        {
            "acknowledged": acknowledged,
            "recovered": recovered,
            "lost": lost,
            "allowed": allowed,
            "longest_fsync_ms": round(fsync * 1000, 2),
            "writes_per_s": round(rate),
        },
    )
    assert acknowledged > 100, "too few writes to measure anything"
    assert lost >= -1, f"Redis has {-lost} writes more than were acknowledged, at most 1 was in flight"
    assert lost <= allowed, (
        f"{appendfsync} lost {lost} of {acknowledged} acknowledged writes to a SIGKILL of the process; "
        f"it may lose {allowed} ({rate:.0f} writes/s, longest fsync {fsync * 1000:.1f} ms)"
    )


# --- no late delivery ---------------------------------------------------------------------------
def frozen(config: Config) -> int:
    """The pid of the private Kafka, to SIGSTOP and SIGCONT."""
    pid = services.status(config)["kafka"]["pid"]
    assert pid, "the private Kafka is not running"
    return int(pid)


def freeze(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP the process and return once every one of its threads shows as stopped. A fast submit
    sent right after the signal was once acknowledged and run within 17 ms, as if the broker were
    not frozen at all; the test must not start before the freeze has taken effect."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue  # a thread that ended meanwhile
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGCONT)  # the caller's clean-up does not run: resume it here
    raise AssertionError(f"Kafka (pid {pid}) did not stop within {timeout:g}s of SIGSTOP")


def messages_with(config: Config, token: str, topic: str | None = None, timeout: float = 5.0) -> list[bytes]:
    """Messages in the task topic (or ``topic``) whose body carries ``token``, read from the start."""
    topic = topic or config.task_topic
    consumer = KafkaConsumer(**config.kafka_options(), group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(p) < ends[p] for p in parts):
            for records in consumer.poll(timeout_ms=200).values():
                found += [r.value for r in records if token.encode() in r.value]
        return found
    finally:
        consumer.close()


def taken(config: Config, task_id: str) -> list[dict[str, object]]:
    """The workers' events (``NS.events``) that say a worker took the message of ``task_id`` and
    was done with it: skipped it, or ran it to an outcome."""
    events = [e for value in messages_with(config, task_id, config.events_topic) for e in json.loads(value)]
    return [
        e
        for e in events
        if e.get("id") == task_id and (e["type"] == "skip" or e.get("status") in ("success", "failed"))
    ]


@pytest.mark.parametrize("wait", [True, False], ids=["waiting-submit", "fast-submit"])
def test_a_submit_that_raised_while_kafka_was_frozen_never_runs(
    wait: bool, private_services: Config, make_private: Callable[..., Config], tmp_path: Path, wait_for
) -> None:
    """Kafka is frozen (SIGSTOP) after the producer connected, then resumed (SIGCONT). The refused
    submit leaves no record, and even if the resumed broker appends its message, no worker runs it."""
    config = make_private(imports=PROBE, submit_timeout=3.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker")
        first = client.submit_with("lab.work", [0.0, "before"], wait=True)  # the producer is connected
        assert first.result(timeout=30) == 1
        pid = frozen(private_services)
        freeze(pid)
        try:
            began = time.monotonic()
            handle = None
            with pytest.raises(ServiceUnavailable, match="Kafka"):
                handle = client.submit_with("lab.work", [0.0, "refused"], wait=wait)
                assert not wait, "a waiting submit returned while Kafka was frozen"
                handle.accepted()  # the fast path says so here (or in flush)
            took = time.monotonic() - began
            if handle is not None:
                with pytest.raises(ServiceUnavailable, match=handle.id):
                    client.flush()
                assert client.backend.task(handle.id) is None, "a refused fast submit left its record"
        finally:
            os.kill(pid, signal.SIGCONT)
        assert took < config.submit_timeout + 6, f"the submit took {took:.1f}s to fail"
        # After the broker resumed: give a late append every chance to arrive and be consumed.
        after = client.submit_with("lab.work", [0.0, "after"], wait=True)
        assert after.result(timeout=60) == 1, "the queue did not recover after Kafka resumed"
        time.sleep(config.submit_timeout)
        late = [json.loads(value)["id"] for value in messages_with(config, "refused")]
        # Count only once the worker has had every late message: its event log shows each one taken
        # (skipped, or run to an outcome), so a message delivered after all is counted, not missed.
        for late_id in late:
            wait_for(lambda i=late_id: taken(config, i), timeout=30, what=f"a worker to take late message {late_id}")
        counts = execution_counts(client.backend, {"refused": "refused"})
        tasks = {t["id"]: t for t in client.backend.tasks(limit=10)}
        record_figures(
            f"kafka_frozen_{'waiting' if wait else 'fast'}_submit",
            {
                "failed_after_s": round(took, 2),
                "late_messages_in_topic": len(late),
                "taken_as": [e.get("note") or e.get("status") for i in late for e in taken(config, i)],
                "executions": counts["refused"],
            },
        )
        assert counts["refused"] == 0, f"a submit that raised was executed: {[taken(config, i) for i in late]}"
        assert all("refused" not in json.dumps(t.get("args")) for t in tasks.values()), tasks
        assert len(tasks) == 2, f"expected the records of 'before' and 'after' only: {tasks}"


def test_a_fast_submit_nobody_asks_about_is_withdrawn_when_kafka_never_answers(
    private_services: Config, make_private: Callable[..., Config], tmp_path: Path, wait_for
) -> None:
    """The program never calls ``accepted`` or ``flush``: the client's own watch withdraws the task
    that Kafka left unanswered, so no ``queued`` record waits for a message that may never come,
    and the message the resumed broker may still append never runs."""
    config = make_private(imports=PROBE, submit_timeout=3.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker")
        assert client.submit_with("lab.work", [0.0, "before"], wait=True).result(timeout=30) == 1
        pid = frozen(private_services)
        freeze(pid)
        try:
            handle = client.submit("lab.work", 0.0, "unasked")
            assert client.status(handle.id).value == "queued"  # the client's read sees its own submit
            overdue = config.submit_timeout + OVERDUE_AFTER + 10
            wait_for(lambda: client.backend.task(handle.id) is None, timeout=overdue, what="the withdrawal")
            with pytest.raises(ServiceUnavailable, match=f"Kafka did not accept task {handle.id}"):
                client.result(handle.id, timeout=5)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert client.submit_with("lab.work", [0.0, "after"], wait=True).result(timeout=60) == 1
        time.sleep(config.submit_timeout)  # a late append of the withdrawn message has every chance
        for late_id in [json.loads(value)["id"] for value in messages_with(config, "unasked")]:
            wait_for(lambda i=late_id: taken(config, i), timeout=30, what=f"a worker to take late message {late_id}")
        assert execution_counts(client.backend, {"unasked": "unasked"})["unasked"] == 0
        assert client.status(handle.id).value == "unknown"


def test_a_client_submitting_through_a_kafka_sigkill_keeps_working_after_it(
    private_services: Config, make_private: Callable[..., Config], tmp_path: Path, wait_for
) -> None:
    """Fast submits in flight when the broker is SIGKILLed: each is acknowledged, refused or
    withdrawn, and once Kafka is back the same client submits again (kafka-python's idempotent
    producer used to stay wedged here: no send was ever answered again)."""
    config = make_private(submit_timeout=3.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker")
        handles = []
        began = time.monotonic()
        while time.monotonic() - began < 2:  # a stream of submits, some in flight at the kill
            handles.append(client.submit("add", 1, 2))
            time.sleep(0.005)
        services.stop(private_services, "kafka", signal=signal.SIGKILL)
        services.start(private_services, "kafka")
        assert submit_until_accepted(client, 90).result(timeout=60) == 3, "the client's producer stayed wedged"
        answered = config.submit_timeout + OVERDUE_AFTER + 10
        wait_for(lambda: all(h._sent is None or h._sent.is_done for h in handles), timeout=answered, what="answers")
        for handle in handles:  # accepted ones run; the others leave nothing behind
            try:
                handle.accepted(timeout=1)
            except ServiceUnavailable:
                assert client.backend.task(handle.id) is None
            else:
                assert handle.result(timeout=60) == 3
