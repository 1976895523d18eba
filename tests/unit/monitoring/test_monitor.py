"""The monitoring read models on hand-made frames: counters, filters, throughput, busy spans, marks, and
the share group (its Kafka calls answered by a stub)."""

from __future__ import annotations

import pandas as pd
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable
from yadtq.monitoring.monitor import (
    COUNT_COLUMNS,
    KAFKA_TIMEOUT_MS,
    SHARE_GROUP_COLUMNS,
    STATUSES,
    busy_spans,
    counters,
    counts_as_text,
    filter_tasks,
    latencies,
    owned,
    share_group,
    share_group_title,
    share_members,
    shared_dispatch,
    throughput,
    worker_marks,
)
from yadtq.transport.sharegroup import admin as share_admin

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def tasks_frame() -> pd.DataFrame:
    rows = [
        ("a", "add", "success", "w1", 0.0, 1.0),
        ("b", "add", "failed", "w2", 0.0, 3.0),
        ("c", "sleep", "processing", "w1", 1.0, None),
        ("d", "sleep", "success", "w2", 1.0, 1.5),
        ("e", "mul", "queued", "", 2.0, None),
    ]
    return pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "op": [r[1] for r in rows],
            "status": [r[2] for r in rows],
            "worker": [r[3] for r in rows],
            "submitted_at": [at(r[4]) for r in rows],
            "finished_at": [at(r[5]) if r[5] is not None else pd.NaT for r in rows],
        }
    )


def test_counters_have_every_status_in_order() -> None:
    counts = counters(tasks_frame())
    assert list(counts) == list(STATUSES)
    assert counts == {"queued": 1, "processing": 1, "retrying": 0, "success": 2, "failed": 1, "cancelled": 0}
    assert counters(tasks_frame().iloc[0:0]) == dict.fromkeys(STATUSES, 0)


def test_filters_combine_and_empty_means_any() -> None:
    frame = tasks_frame()
    assert list(filter_tasks(frame)["id"]) == list("abcde")
    assert list(filter_tasks(frame, status="success")["id"]) == ["a", "d"]
    assert list(filter_tasks(frame, status="success", worker="w2")["id"]) == ["d"]
    assert list(filter_tasks(frame, op="sleep", status="")["id"]) == ["c", "d"]
    assert filter_tasks(frame, op="div").empty


def test_latency_is_submit_to_finish_of_finished_tasks_only() -> None:
    frame = latencies(tasks_frame())
    assert list(frame["latency"]) == [1.0, 0.5, 3.0]  # ordered by finish time


def test_throughput_counts_finishes_per_second_with_percentiles() -> None:
    frame = throughput(tasks_frame(), every="1s")
    assert list(frame["per_second"]) == [2.0, 0.0, 1.0]  # a, d at 12:00:01; b at 12:00:03
    assert frame.loc[0, "p50"] == pytest.approx(0.75)
    assert frame.loc[2, "p99"] == pytest.approx(3.0)
    assert list(throughput(tasks_frame(), every="2s")["per_second"]) == [1.0, 0.5]  # 2 in [0,2), 1 in [2,4)
    assert throughput(tasks_frame().iloc[0:0]).empty


def test_busy_spans_end_at_the_next_beat_or_after_the_last_one() -> None:
    beats = pd.DataFrame(
        [
            ("w1", at(0), "idle", ""),
            ("w1", at(1), "busy", "t1"),
            ("w1", at(2), "busy", "t1"),
            ("w1", at(3), "idle", ""),
            ("w2", at(0), "busy", "t2"),
            ("w2", at(1), "busy", "t2"),  # then silence: killed while busy
        ],
        columns=["worker", "at", "state", "task"],
    )
    spans = busy_spans(beats, interval=0.5)
    assert spans.to_dict("records") == [
        {"worker": "w1", "start": at(1), "end": at(3), "task": "t1"},
        {"worker": "w2", "start": at(0), "end": at(1.5), "task": "t2"},
    ]


def test_worker_marks_come_from_dead_and_stopped_times() -> None:
    workers = pd.DataFrame(
        [{"name": "w1", "dead_at": 10.0, "stopped_at": None}, {"name": "w2", "dead_at": None, "stopped_at": 20.0}]
    )
    marks = worker_marks(workers)
    assert list(zip(marks["worker"], marks["mark"], strict=True)) == [("w1", "dead"), ("w2", "stopped")]
    assert marks["at"].iloc[1] == pd.Timestamp(20.0, unit="s", tz="UTC")


def test_owned_reads_a_heartbeat_partitions_cell_whatever_the_table_holds() -> None:
    assert owned("0,3,5") == {0, 3, 5}
    assert owned("7") == {7}
    assert owned("") == owned(None) == owned(float("nan")) == set()  # owns none, or no heartbeat yet


# --- the share group (shared dispatch) ----------------------------------------------------------------
def workers_frame() -> pd.DataFrame:
    """Worker records as ``client.workers()`` has them: counts missing for a worker that reports none."""
    return pd.DataFrame(
        [
            {"name": "worker-10", "state": "busy", "partitions": "0", "in_flight": 2.0, "max_delivery_count": 3.0},
            {"name": "worker-2", "state": "idle (no partition)", "partitions": "", "in_flight": 0.0},
            {"name": "worker-3", "state": "dead", "partitions": "0", "in_flight": 1.0, "max_delivery_count": 1.0},
            {"name": "worker-4", "state": "stopped", "partitions": "", "in_flight": 0.0, "max_delivery_count": 0.0},
            {"name": "worker-5", "state": "busy", "partitions": "0"},
        ]
    )


def described(*names: str, state: str = "Stable") -> dict[str, object]:
    members = [{"client_id": n, "member_id": f"m-{n}", "host": "/127.0.0.1", "partitions": [0]} for n in names]
    return {"state": state, "epoch": 7, "members": members}


def test_share_members_are_running_workers_and_every_member_kafka_lists() -> None:
    frame = share_members(described("worker-10", "worker-3", "worker-5", "stranger"), workers_frame())
    assert list(frame.columns) == SHARE_GROUP_COLUMNS
    rows = {row["worker"]: row for row in frame.to_dict("records")}
    # natural order; the stopped worker is gone, the dead one stays while Kafka lists it
    assert list(frame["worker"]) == ["stranger", "worker-2", "worker-3", "worker-5", "worker-10"]
    assert rows["worker-10"] == {
        "worker": "worker-10",
        "state": "busy",
        "member": True,
        "partitions": "0",
        "in_flight": 2,
        "max_delivery_count": 3,
    }
    assert not rows["worker-2"]["member"] and rows["worker-2"]["partitions"] == "", "still joining"
    assert rows["worker-2"]["in_flight"] == 0 and pd.isna(rows["worker-2"]["max_delivery_count"])
    assert rows["worker-3"]["state"] == "dead" and rows["worker-3"]["member"], "killed: Kafka lists it a while"
    assert pd.isna(rows["worker-5"]["in_flight"]), "a worker that reports no counts has none"
    assert rows["stranger"]["state"] == "" and rows["stranger"]["member"], "a member with no worker record"
    assert str(frame["in_flight"].dtype) == "Int64" and frame["member"].dtype == bool


def test_share_members_of_an_empty_group_and_no_workers() -> None:
    frame = share_members({"state": "Dead", "members": []}, None)
    assert frame.empty and list(frame.columns) == SHARE_GROUP_COLUMNS
    frame = share_members(described(), workers_frame().iloc[0:0])
    assert frame.empty


def test_share_group_title_says_state_members_and_offsets() -> None:
    frame = share_members(described("worker-10"), workers_frame())
    frame.attrs.update(group="ns.shared-workers", group_state="Stable", offsets=[{"partition": 0, "end": 12}])
    assert share_group_title(frame) == "Share group ns.shared-workers: Stable, 1 member(s); partition 0: end offset 12"
    frame.attrs["offsets"] = [{"partition": 0, "end": 12, "start": 9, "lag": 3}]
    assert share_group_title(frame).endswith("partition 0: end offset 12, start offset 9, lag 3")
    assert share_group_title(share_members({"members": []})) == "Share group : unknown, 0 member(s)"


def test_counts_as_text_blanks_missing_counts() -> None:
    shown = counts_as_text(share_members(described("worker-10", "worker-5"), workers_frame()))
    assert shown.set_index("worker")[list(COUNT_COLUMNS)].to_dict("index") == {
        "worker-2": {"in_flight": "0", "max_delivery_count": ""},
        "worker-5": {"in_flight": "", "max_delivery_count": ""},
        "worker-10": {"in_flight": "2", "max_delivery_count": "3"},
    }
    assert "<NA>" not in shown.to_string() and "2.0" not in counts_as_text(workers_frame()).to_string()


class StubAdmin:
    """The admin client calls ``share_group`` makes, answered from a dict (or failing)."""

    closed = False

    def __init__(self, fail: bool = False, **_options: object) -> None:
        self.fail = fail

    def describe_topics(self, topics: list[str]) -> list[dict[str, object]]:
        if self.fail:
            raise KafkaTimeoutError("no answer")
        return [{"topic": topics[0], "partitions": [{"partition_index": 0}]}]

    def list_partition_offsets(self, specs: dict[TopicPartition, object], timeout_ms: int) -> dict[object, int]:
        assert timeout_ms == KAFKA_TIMEOUT_MS
        return dict.fromkeys(specs, 42)

    def close(self) -> None:
        StubAdmin.closed = True


def test_share_group_reads_kafka_with_deadlines(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    config = Config.from_env(env={}, home=tmp_path, namespace="ns")
    made: list[dict[str, object]] = []

    def admin(**options: object) -> StubAdmin:
        made.append(options)
        return StubAdmin()

    monkeypatch.setattr("kafka.KafkaAdminClient", admin)
    monkeypatch.setattr(share_admin, "describe", lambda _admin, _group: described("worker-10"))
    monkeypatch.setattr(share_admin, "start_offsets", lambda _admin, _group, _topic: {0: (40, 2)})
    frame = share_group(config, workers_frame())
    assert made[0]["request_timeout_ms"] == made[0]["bootstrap_timeout_ms"] == KAFKA_TIMEOUT_MS
    assert StubAdmin.closed
    assert frame.attrs["group"] == "ns.shared-workers" and frame.attrs["group_state"] == "Stable"
    assert frame.attrs["offsets"] == [{"partition": 0, "end": 42, "start": 40, "lag": 2}]
    assert frame.set_index("worker")["member"].to_dict() == {"worker-2": False, "worker-5": False, "worker-10": True}

    monkeypatch.setattr("kafka.KafkaAdminClient", lambda **o: StubAdmin(fail=True))
    with pytest.raises(ServiceUnavailable, match="Kafka did not answer"):
        share_group(config, workers_frame())


def test_shared_dispatch_asks_no_kafka_for_partitioned(tmp_path) -> None:
    config = Config.from_env(env={}, home=tmp_path, dispatch="partitioned", kafka_bootstrap="127.0.0.1:1")
    assert shared_dispatch(config) is False
