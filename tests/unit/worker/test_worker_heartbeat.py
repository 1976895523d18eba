"""What a shared-dispatch worker's heartbeat says about the share group: records in flight and the
highest delivery count among them. Driven with a stub share consumer and a stub backend, no service."""

from __future__ import annotations

from typing import Any

import pytest

from yadtq.core.config import Config
from yadtq.transport.ledger import AckLedger, OffsetLedger
from yadtq.transport.sharegroup import ShareRecord
from yadtq.worker.worker import Worker


class StubShare:
    """The share consumer's calls ``Worker._poll_shared`` makes, handing out queued records."""

    assignment = frozenset({0})

    def __init__(self) -> None:
        self.queued: list[ShareRecord] = []
        self.acknowledged: list[tuple[int, int]] = []

    def poll(self, max_records: int, _timeout: float) -> list[ShareRecord]:
        taken, self.queued = self.queued[:max_records], self.queued[max_records:]
        return taken

    def acknowledge(self, partition: int, offset: int) -> None:
        self.acknowledged.append((partition, offset))

    def renew(self, _records: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def record(offset: int, deliveries: int) -> ShareRecord:
    return ShareRecord("t.tasks", 0, offset, None, b"{}", deliveries)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch, tmp_path) -> tuple[Worker, StubShare, list[dict[str, Any]]]:
    w = Worker(Config.from_env(env={}, home=tmp_path, concurrency=3), name="w1")
    share = StubShare()
    w._share = share  # type: ignore[assignment]
    w.ledger = AckLedger(share.acknowledge)
    beats: list[dict[str, Any]] = []

    def heartbeat(*args: Any, **kwargs: Any) -> str:
        beats.append({"state": args[1], **kwargs})
        return "idle"

    monkeypatch.setattr(w.backend, "heartbeat", heartbeat)
    return w, share, beats


def test_a_beat_reports_the_records_held_and_their_highest_delivery_count(worker) -> None:
    w, share, beats = worker
    w.state = "idle"
    w._beat()
    assert beats[-1]["in_flight"] == 0 and beats[-1]["max_delivery_count"] == 0

    share.queued = [record(7, 1), record(8, 3), record(9, 2), record(10, 1)]
    w._poll_shared(share)  # type: ignore[arg-type]
    assert w.ledger.held() == [(0, 7), (0, 8), (0, 9)], "one record per free slot"
    w.state = "busy"
    w._beat()
    assert (beats[-1]["in_flight"], beats[-1]["max_delivery_count"]) == (3, 3)

    w.ledger.settle(0, 8)  # the task of the record delivered three times is done
    w._beat()
    assert (beats[-1]["in_flight"], beats[-1]["max_delivery_count"]) == (2, 2)
    assert share.acknowledged == [(0, 8)]

    w.ledger.settle(0, 7)
    w.ledger.settle(0, 9)
    w.runner._inbox.clear()  # the stub runner never started: nothing runs them
    w._poll_shared(share)  # type: ignore[arg-type]
    assert w.ledger.held() == [(0, 10)]
    assert set(w._delivery_counts) == {(0, 10)}, "counts of settled records are dropped"
    w._beat()
    assert (beats[-1]["in_flight"], beats[-1]["max_delivery_count"]) == (1, 1)

    w.state = "stopped"  # its share consumer is closed: what it held went back to the broker
    w._beat()
    assert (beats[-1]["in_flight"], beats[-1]["max_delivery_count"]) == (0, 0)


def test_a_partitioned_worker_reports_neither(worker) -> None:
    w, _share, beats = worker
    w.ledger = OffsetLedger()
    w.ledger.add(0, 1)
    w._beat()
    assert beats[-1]["in_flight"] is None and beats[-1]["max_delivery_count"] is None
