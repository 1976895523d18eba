"""The background sink behind the worker's monitoring hooks: never waits, drops when full, drains."""

from __future__ import annotations

import threading
import time
from typing import Any

from yadtq.worker import sink
from yadtq.worker.sink import AsyncSink


class Recorder(AsyncSink):
    name = "recorder"

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        super().__init__()
        self.batches: list[list[dict[str, Any]]] = []
        self.gate, self.fail, self.closed = gate, fail, False
        self.writing = threading.Event()

    def write(self, batch: list[dict[str, Any]]) -> None:
        self.writing.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise OSError("sink is down")
        self.batches.append(batch)

    def close_sink(self) -> None:
        self.closed = True


def test_records_are_written_in_order_and_drained_on_stop() -> None:
    recorder = Recorder()
    for i in range(1200):
        recorder.put({"i": i})
    recorder.drain(timeout=10)
    written = [r["i"] for batch in recorder.batches for r in batch]
    assert written == list(range(1200))
    assert max(len(b) for b in recorder.batches) <= sink.BATCH
    assert recorder.closed and recorder.written == 1200


def test_a_stuck_sink_costs_the_caller_nothing_and_drops_beyond_the_queue(monkeypatch) -> None:
    monkeypatch.setattr(sink, "QUEUE_SIZE", 10)
    gate = threading.Event()
    recorder = Recorder(gate)
    recorder.put({"i": -1})
    assert recorder.writing.wait(10)  # the writer is stuck in its first batch
    started = time.monotonic()
    for i in range(100):
        recorder.put({"i": i})
    assert time.monotonic() - started < 0.5
    assert recorder.dropped == 90  # ten fit in the queue
    gate.set()
    recorder.drain(timeout=10)
    assert [r["i"] for batch in recorder.batches for r in batch] == [-1, *range(10)]


def test_a_failing_sink_is_logged_never_raised(caplog) -> None:
    recorder = Recorder(fail=True)
    recorder.put({"i": 1})
    recorder.drain(timeout=10)
    assert recorder.written == 0
    assert "recorder: 1 records not written: sink is down" in caplog.text
