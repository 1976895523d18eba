"""A hook that hands records to a background thread, so that no worker step ever waits for it.

Hooks run on the worker's runner and heartbeat threads, between claim and store: a slow or absent
sink (Kafka down, Redis slow) must cost the worker nothing. So a hook only appends a record to a
bounded queue; one daemon thread writes batches, a few a second. A full queue drops the record, and
a failed write is logged, at most once per :data:`WARN_EVERY` seconds, never raised. When the worker
stops, the thread gets :data:`DRAIN_SECONDS` to write what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from yadtq.worker.events import Hooks

log = logging.getLogger(__name__)

#: Records waiting to be written before new ones are dropped.
QUEUE_SIZE = 10_000
#: Most records written in one batch.
BATCH = 500
#: A sink's warnings (drops, failed writes) are logged at most this often.
WARN_EVERY = 30.0
#: How long a stopping worker waits for its sink to write what is queued.
DRAIN_SECONDS = 5.0


class AsyncSink(Hooks):
    """Subclasses turn hook calls into records with :meth:`put` and write batches in :meth:`write`
    (on the sink's own thread), and may open and close their connection in :meth:`open_sink` /
    :meth:`close_sink`."""

    name = "sink"
    #: How long a batch gathers records after its first one. Writing each record as it came cost
    #: a busy worker a third of its CPU (a write per task, and a thread woken per record); gathering
    #: for a tenth of a second makes it a few writes a second. It is also about what a SIGKILLed
    #: worker loses: the records of its last moments.
    linger = 0.1

    def __init__(self) -> None:
        # A deque and an Event rather than a queue.Queue: put() on the hook's thread is then an
        # append, with no lock and no wake-up of the writer for every record.
        self._pending: deque[dict[str, Any]] = deque()
        self._ready = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned = 0.0
        self.dropped = 0
        self.written = 0

    # --- for subclasses ----------------------------------------------------------------------
    def open_sink(self) -> None: ...

    def write(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close_sink(self) -> None: ...

    def put(self, record: dict[str, Any]) -> None:
        """Queue a record without waiting; a full queue drops it (and says so, now and then)."""
        self._ensure_thread()
        if len(self._pending) >= QUEUE_SIZE:
            self.dropped += 1
            self._warn("%s: queue full, %d records dropped so far", self.name, self.dropped)
            return
        self._pending.append(record)
        if not self._ready.is_set():
            self._ready.set()

    def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Write what is queued and stop the thread, within ``timeout`` seconds."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._ready.set()
        thread.join(timeout)

    # --- the thread --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._stopping = False
                    self._thread = threading.Thread(target=self._loop, name=f"yadtq-{self.name}", daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        try:
            self.open_sink()
        except Exception as exc:
            self._warn("%s: cannot open: %s", self.name, exc)
        while True:
            if not self._ready.wait(timeout=1.0):
                continue  # nothing yet (a bounded wait, so the thread never blocks for good)
            if not self._stopping:
                time.sleep(self.linger)  # let the batch gather
            self._ready.clear()  # before taking: a record put from here on sets it again
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                try:
                    self.write(batch)
                    self.written += len(batch)
                except Exception as exc:
                    self._warn("%s: %d records not written: %s", self.name, len(batch), exc)
            if self._stopping:
                break
        try:
            self.close_sink()
        except Exception as exc:
            self._warn("%s: close failed: %s", self.name, exc)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(message, *args)
