"""The client's write-behind buffer of task records: submit without a Redis round trip per task.

A fast ``submit`` hands the message to Kafka's producer (which batches it) and the task's ``queued``
record to this outbox, whose thread writes every record waiting in one pipeline. Nothing depends on
the record being there first: a worker that claims a task whose record is missing creates it (the
claim script), and the record written later then changes nothing. What the outbox must get right
is the failure case: a message Kafka never took must not leave a ``queued`` record behind, so a
refused delivery queues a take-back behind the record, in order.

Reads through the client wait for the outbox first (:meth:`flush`), so a program always sees its
own submits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from yadtq.core.errors import ServiceUnavailable
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend

log = logging.getLogger(__name__)

#: Most records written in one pipeline.
BATCH = 1000


class Outbox:
    def __init__(self, backend: Backend, timeout: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self._queue: deque[TaskMessage | str] = deque()  # a message to record, or an id to take back
        self._cond = threading.Condition()
        self._busy = False
        self._failed = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def record(self, msg: TaskMessage) -> None:
        self._put(msg)

    def take_back(self, task_id: str) -> None:
        """Kafka refused the message: remove its record (queued behind the record, so never before it)."""
        self._put(task_id)

    def flush(self) -> None:
        """Wait until every record handed over is written; ServiceUnavailable if some could not be."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while (self._queue or self._busy) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceUnavailable(f"Redis did not take {len(self._queue)} task records in {self.timeout:g}s")
                self._cond.wait(left)
            failed, self._failed = self._failed, 0
        if failed:
            raise ServiceUnavailable(
                f"{failed} task records could not be written to Redis; their tasks still run, and a worker "
                "creates each record when it claims the task"
            )

    def close(self) -> None:
        try:
            self.flush()
        except ServiceUnavailable as exc:
            log.warning("%s", exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)

    def _put(self, item: TaskMessage | str) -> None:
        with self._cond:
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="yadtq-outbox", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: list[TaskMessage | str]) -> None:
        """One pipeline for the batch, retried through a Redis outage for up to ``timeout``."""
        give_up, delay = time.monotonic() + self.timeout, 0.05
        while True:
            try:
                self.backend.record(batch)
                return
            except ServiceUnavailable as exc:
                if time.monotonic() > give_up:
                    log.warning("dropping %d task records: %s", len(batch), exc)
                    with self._cond:
                        self._failed += len(batch)
                    return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
