"""The monitoring read models on hand-made frames: counters, filters, throughput, busy spans, marks."""

from __future__ import annotations

import pandas as pd
import pytest

from yadtq.monitor import STATUSES, busy_spans, counters, filter_tasks, latencies, owned, throughput, worker_marks

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
