"""Which fetched messages are settled, and how far each partition may be committed.

A worker runs several messages of a partition at once and they finish in any order, but a Kafka
offset commit says "everything below this is done". So the commit point of a partition is the
lowest offset still unsettled (or one past the highest fetched, when none is): a message is never
committed before its outcome is stored, whatever finished after it.

Thread-safe: the consumer thread adds and commits, the runner thread settles.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable


class _Partition:
    __slots__ = ("committed", "heap", "next", "settled")

    def __init__(self) -> None:
        self.heap: list[int] = []  # unsettled offsets (lazily cleaned: see ``settled``)
        self.settled: set[int] = set()  # settled offsets still in the heap
        self.next = -1  # one past the highest offset fetched
        self.committed = -1  # the last commit point handed out

    def point(self) -> int:
        while self.heap and self.heap[0] in self.settled:
            self.settled.discard(heapq.heappop(self.heap))
        return self.heap[0] if self.heap else self.next


class OffsetLedger:
    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}
        self._lock = threading.Lock()

    def add(self, partition: int, offset: int) -> None:
        """A message was fetched and is not settled yet."""
        with self._lock:
            part = self._parts.setdefault(partition, _Partition())
            if offset >= part.next:
                heapq.heappush(part.heap, offset)
                part.next = offset + 1

    def settle(self, partition: int, offset: int) -> None:
        """The message's outcome is stored (or it needs none): it may be committed."""
        with self._lock:
            part = self._parts.get(partition)
            if part is not None and offset < part.next:
                part.settled.add(offset)

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions went to another worker: their commit points are its business now."""
        with self._lock:
            for partition in partitions:
                self._parts.pop(partition, None)

    def commit_points(self) -> dict[int, int]:
        """Partitions whose commit point moved since the last call, with the offset to commit."""
        out: dict[int, int] = {}
        with self._lock:
            for partition, part in self._parts.items():
                point = part.point()
                if point > part.committed:
                    part.committed = point
                    out[partition] = point
        return out

    def retry(self, points: dict[int, int]) -> None:
        """A commit of ``points`` failed: hand them out again at the next :meth:`commit_points`."""
        with self._lock:
            for partition, offset in points.items():
                part = self._parts.get(partition)
                if part is not None and part.committed == offset:
                    part.committed = -1

    def unsettled(self) -> int:
        with self._lock:
            return sum(len(p.heap) - len(p.settled) for p in self._parts.values())


class AckLedger:
    """The shared-dispatch counterpart of :class:`OffsetLedger`: records acquired from the share
    group and not yet settled. A share group takes one acknowledgement per record, so there is no
    commit point: a settled record is acknowledged (``ack``) at once, in any order, and the records
    still held are the ones whose locks the worker renews.

    Thread-safe: the consumer thread adds, the runner thread settles.
    """

    def __init__(self, ack: Callable[[int, int], None]) -> None:
        self._ack = ack
        self._held: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def add(self, partition: int, offset: int) -> None:
        with self._lock:
            self._held.add((partition, offset))

    def settle(self, partition: int, offset: int) -> None:
        with self._lock:
            if (partition, offset) not in self._held:
                return
            self._held.discard((partition, offset))
        self._ack(partition, offset)

    def held(self) -> list[tuple[int, int]]:
        """Records acquired and not settled: their tasks wait, run, or are parked here."""
        with self._lock:
            return sorted(self._held)

    def unsettled(self) -> int:
        with self._lock:
            return len(self._held)
