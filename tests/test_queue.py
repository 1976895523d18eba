"""The queue end to end, on the real Kafka and Redis, with workers as separate processes."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from kafka import KafkaProducer

from tests.conftest import cli, live_workers
from yadtq import BadArguments, Client, TaskFailed, TaskStatus, TaskTimeout, UnknownOperation, UnknownTask
from yadtq.core.config import Config
from yadtq.processes.pool import Pool
from yadtq.store.backend import Backend

pytestmark = pytest.mark.services

BUILTINS = [
    ("add", [2, 3], 5),
    ("sub", [2, 5], -3),
    ("mul", [4, 2.5], 10.0),
    ("div", [7, 2], 3.5),
    ("mod", [17, 5], 2),
    ("pow", [2, 10], 1024),
    ("neg", [4], -4),
    ("abs", [-7.5], 7.5),
    ("sum", [[1, 2, 3.5]], 6.5),
    ("mean", [[1, 2, 3, 4]], 2.5),
    ("min", [[3, -1, 2]], -1),
    ("max", [[3, -1, 2]], 3),
    ("gcd", [84, 36], 12),
    ("factorial", [10], 3628800),
    ("fibonacci", [90], 2880067194370816120),
    ("is_prime", [2_147_483_647], True),
    ("is_prime", [2_147_483_649], False),
    ("sleep", [0.05], 0.05),
]


def test_every_builtin_operation_end_to_end(client: Client, pool: Pool, wait_for) -> None:
    pool.start(1)
    handles = [(client.submit(op, *args), op, expected) for op, args, expected in BUILTINS]
    for handle, op, expected in handles:
        assert handle.result(timeout=60) == expected, op
        assert handle.status() is TaskStatus.SUCCESS


def test_300_tasks_over_three_workers_all_succeed(client: Client, pool: Pool, wait_for) -> None:
    pool.start(3)
    wait_for(live_workers(client, 3), timeout=60, what="3 workers with partitions")
    handles = [(client.submit("add", i, i), 2 * i) for i in range(150)]
    handles += [(client.submit("mul", i, 3), 3 * i) for i in range(100)]
    handles += [(client.submit("sleep", 0.01), 0.01) for _ in range(50)]
    assert [h.result(timeout=120) for h, _ in handles] == [expected for _, expected in handles]
    frame = client.tasks(limit=400)
    assert len(frame) == 300
    assert set(frame["status"]) == {"success"}
    assert (frame["attempts"] == 1).all()
    per_worker = frame["worker"].value_counts()
    assert len(per_worker) > 1, f"only one worker took part: {per_worker.to_dict()}"
    workers = client.workers().set_index("name")
    assert workers["processed"].sum() == 300


def test_status_history_and_timestamps_are_consistent(client: Client, pool: Pool) -> None:
    pool.start(1)
    handle = client.submit("sleep", 0.2)
    assert handle.result(timeout=60) == 0.2
    info = handle.info()
    assert info is not None
    assert info["submitted_at"] <= info["started_at"] <= info["finished_at"]
    assert info["finished_at"] - info["started_at"] >= 0.2
    history = handle.history()
    assert [h["status"] for h in history] == ["queued", "processing", "success"]
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    assert history[1]["worker"] == history[2]["worker"] == info["worker"]
    assert history[2]["attempt"] == info["attempts"] == 1


def test_heartbeats_appear_and_stop_when_the_worker_stops(client: Client, pool: Pool, config: Config, wait_for) -> None:
    (proc,) = pool.start(1)
    wait_for(lambda: len(client.heartbeats(proc.name)) >= 3, timeout=60, what="three heartbeats")
    workers = client.workers().set_index("name")
    assert workers.loc[proc.name, "pid"] == proc.pid
    assert workers.loc[proc.name, "state"] == "idle"
    assert pool.stop(proc.name) == 0
    assert client.workers().set_index("name").loc[proc.name, "state"] == "stopped"
    count = len(client.heartbeats(proc.name))
    time.sleep(config.heartbeat_interval * 4)
    assert len(client.heartbeats(proc.name)) == count
    timeline = client.heartbeats(proc.name)
    assert timeline["at"].is_monotonic_increasing
    assert timeline["state"].iloc[-1] == "stopped"


def test_user_mistakes_are_refused_before_anything_is_sent(client: Client) -> None:
    with pytest.raises(UnknownOperation, match="unknown operation 'frobnicate'"):
        client.submit("frobnicate", 1)
    with pytest.raises(BadArguments, match="missing a required argument"):
        client.submit("add", 1)
    with pytest.raises(BadArguments, match="must be a number"):
        client.submit("add", 1, "two")
    with pytest.raises(BadArguments, match="between 0 and 1000"):
        client.submit("factorial", 10**6)
    with pytest.raises(BadArguments, match="bits"):
        client.submit("pow", 10, 10**6)
    assert client.backend.count_tasks() == 0
    assert client.tasks().empty


def test_division_by_zero_fails_the_task_not_the_worker(client: Client, pool: Pool) -> None:
    (proc,) = pool.start(1)
    bad = client.submit("div", 1, 0)
    with pytest.raises(TaskFailed, match="ZeroDivisionError: division by zero") as caught:
        bad.result(timeout=60)
    assert caught.value.status == "failed"
    assert bad.status() is TaskStatus.FAILED
    assert client.submit("add", 1, 1).result(timeout=30) == 2
    assert proc.alive


def test_gather_returns_every_result_in_order_in_a_few_round_trips(client: Client, pool: Pool, monkeypatch) -> None:
    pool.start(2)
    handles = [client.submit("add", i, i) for i in range(300)]
    assert client.gather(handles, timeout=120) == [2 * i for i in range(300)]
    reads: list[int] = []
    outcomes = client.backend.outcomes
    monkeypatch.setattr(client.backend, "outcomes", lambda ids: reads.append(len(ids)) or outcomes(ids))
    assert client.gather(reversed(handles), timeout=10) == [2 * i for i in reversed(range(300))]
    assert sum(reads) == 300 and len(reads) <= 10, reads  # one result() each would be 300 round trips


def test_gather_raises_what_results_one_by_one_would(client: Client, pool: Pool) -> None:
    pool.start(1)
    good, bad, after = client.submit("add", 1, 1), client.submit("div", 1, 0), client.submit("add", 2, 2)
    with pytest.raises(TaskFailed, match="ZeroDivisionError") as caught:
        client.gather([good, bad, after], timeout=60)
    assert caught.value.task_id == bad.id
    assert client.gather([after, good.id], timeout=60) == [4, 2]  # handles or ids
    with pytest.raises(UnknownTask, match="no-such-task"):
        client.gather([good, "no-such-task"], timeout=60)
    slow = client.submit("sleep", 3)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match=slow.id):
        client.gather([good, slow], timeout=0.5)
    assert time.monotonic() - started < 2.5, "the timeout is for all the tasks together"
    assert client.gather([], timeout=1) == []


def test_round_trips_from_many_threads_leave_no_connection_behind(config: Config, wait_for) -> None:
    """Each thread keeps a connection of its own for its round trips: those of threads that ended are
    closed when the next one is made, and ``close()`` closes the rest."""
    name = f"{config.namespace}-round-trips"
    backend = Backend(config, client=redis.Redis.from_url(config.redis_url, decode_responses=True, client_name=name))

    def connections() -> int:
        return sum(1 for c in backend.redis.client_list() if c.get("name") == name)

    try:
        for _ in range(20):
            thread = threading.Thread(target=backend.outcomes, args=(["no-such-task"],))
            thread.start()
            thread.join(timeout=10)
        assert backend.outcomes(["no-such-task"]) == [None]  # this thread's own, made after the others ended
        # this thread's, and the pool's that asks CLIENT LIST
        wait_for(lambda: connections() <= 2, timeout=10, what="the ended threads' connections to close")
    finally:
        backend.close()
    probe = redis.Redis.from_url(config.redis_url, decode_responses=True)
    try:
        wait_for(
            lambda: all(c.get("name") != name for c in probe.client_list()), timeout=10, what="close() to close all"
        )
    finally:
        probe.close()


def test_status_of_an_id_never_submitted_is_unknown(client: Client) -> None:
    assert client.status("no-such-task") is TaskStatus.UNKNOWN
    assert client.handle("no-such-task").info() is None


def test_tasks_table_is_newest_first_and_bounded(client: Client, pool: Pool) -> None:
    pool.start(1)
    handles = [client.submit("add", i, 0) for i in range(12)]
    for h in handles:
        h.result(timeout=60)
    frame = client.tasks(limit=5)
    assert list(frame["id"]) == [h.id for h in reversed(handles[-5:])]
    for column in (
        "id",
        "op",
        "args",
        "status",
        "result",
        "error",
        "worker",
        "attempts",
        "submitted_at",
        "started_at",
        "finished_at",
    ):
        assert column in frame.columns
    assert frame["result"].tolist() == [11, 10, 9, 8, 7]


def test_any_kafka_producer_and_any_redis_client_speak_the_protocol(config: Config, pool: Pool, wait_for) -> None:
    """docs/protocol.md: a hand-written JSON message runs; its status is a plain Redis hash."""
    pool.start(1)
    Client(config).broker.ensure_topics()
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    message = {"v": 1, "id": "raw-task-1", "op": "mul", "args": [6, 7], "kwargs": {}}
    producer.send(config.task_topic, json.dumps(message).encode()).get(timeout=10)
    producer.close()
    r = redis.Redis.from_url(config.redis_url, decode_responses=True)
    key = f"{config.namespace}:task:raw-task-1"
    wait_for(lambda: r.hget(key, "status") == "success", timeout=60, what="the raw task to succeed")
    assert json.loads(r.hget(key, "result")) == 42


def test_cli_submit_wait_prints_the_result(config: Config, pool: Pool) -> None:
    pool.start(1)
    done = cli(config, "submit", "add", "2", "3", "--wait")
    assert (done.returncode, done.stdout.strip()) == (0, "5")
    failed = cli(config, "submit", "div", "1", "0", "--wait")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr and "Traceback" not in failed.stderr
    task_id = cli(config, "submit", "fibonacci", "10").stdout.strip()
    assert cli(config, "result", task_id).stdout.strip() == "55"
    assert cli(config, "status", task_id).stdout.startswith("success  result=55")
    table = cli(config, "tasks").stdout
    assert task_id in table and "fibonacci" in table
    assert "worker-1" in cli(config, "workers").stdout


def test_cli_bad_input_exits_non_zero_with_one_line(config: Config, client: Client) -> None:
    for args, needle in [
        (("submit", "frobnicate", "1"), "unknown operation"),
        (("submit", "add", "1"), "missing a required argument"),
        (("submit", "factorial", "5000"), "between 0 and 1000"),
        (("submit", "add", "1", "2", "--time-limit", "-3"), "time_limit"),
    ]:
        done = cli(config, *args)
        assert done.returncode == 2, args
        assert needle in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert cli(config, "status", "nope").stdout.strip() == "unknown"
    assert client.backend.count_tasks() == 0


def test_workers_beyond_the_partition_count_sit_idle(make_config, tmp_path, wait_for) -> None:
    """A consumer group's limit; a share group has none (``test_shared_dispatch.py``)."""
    config = make_config(partitions=2, dispatch="partitioned")
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        names = {w.name for w in pool.start(3)}
        wait_for(
            # all three in Kafka's settled group (so the assignment is final), one of them without a partition
            lambda: (
                client.broker.group_members() == names
                and sorted(client.workers()["state"]) == ["idle", "idle", "idle (no partition)"]
            ),
            timeout=60,
            what="two workers with partitions and one without",
        )
        assert "stay idle" in cli(config, "workers").stdout
        handles = [client.submit("add", i, 1) for i in range(20)]
        assert [h.result(timeout=60) for h in handles] == [i + 1 for i in range(20)]
        frame = client.workers().set_index("name")
        idle = frame[frame["state"] == "idle (no partition)"].index[0]
        assert frame.loc[idle, "processed"] == 0


@pytest.mark.parametrize("wait", [False, True], ids=["batched", "wait-for-ack"])
def test_a_submit_is_seen_at_once_and_acknowledged_either_way(client: Client, wait: bool) -> None:
    """The fast path returns before Kafka's answer; the client still sees its own task at once, and
    accepted()/flush() confirm that Kafka has every message."""
    handles = [client.submit_with("add", [i, i], wait=wait) for i in range(50)]
    assert client.status(handles[-1].id) is TaskStatus.QUEUED  # no worker runs: it stays queued
    assert all(h.accepted(timeout=30) for h in handles)
    client.flush()
    assert {r["id"] for r in client.backend.tasks(limit=100)} == {h.id for h in handles}


def test_one_worker_runs_several_tasks_at_once_with_concurrency(make_config, tmp_path) -> None:
    config = make_config(concurrency=3)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        handles = [client.submit("sleep", 1.0) for _ in range(3)]
        assert [h.result(timeout=60) for h in handles] == [1.0] * 3
        spans = [(h.info()["started_at"], h.info()["finished_at"]) for h in handles]  # type: ignore[index]
        assert max(start for start, _ in spans) < min(end for _, end in spans), f"ran one after another: {spans}"
        assert len({h.info()["worker"] for h in handles}) == 1  # type: ignore[index]


def test_a_time_limit_stops_its_own_slot_and_spares_the_others(make_config, tmp_path) -> None:
    config = make_config(concurrency=3, imports=("tests.ops_fixture",))
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        stuck = client.submit_with("hang", [60], time_limit=1)
        others = [client.submit("sleep", 3.0) for _ in range(2)]
        with pytest.raises(TaskFailed, match="TimeLimitExceeded"):
            stuck.result(timeout=60)
        assert [h.result(timeout=60) for h in others] == [3.0, 3.0]
        stopped = stuck.info()["finished_at"]  # type: ignore[index]
        for handle in others:
            info = handle.info()
            assert info["started_at"] < stopped < info["finished_at"], "the others did not run beside it"  # type: ignore[index]
            assert info["attempts"] == 1  # type: ignore[index]
