"""A rebalance revokes everything, then assigns: only partitions gone for good lose their waiting messages.

kafka-python keeps the fetch position of a partition that comes back to the same worker, so messages
waiting in the runner for such a partition would never be fetched again if they were dropped.
"""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition

from yadtq.transport.ledger import OffsetLedger
from yadtq.worker.worker import _Listener


class Runner:
    def __init__(self) -> None:
        self.dropped: list[set[int]] = []

    def drop(self, partitions: set[int]) -> None:
        self.dropped.append(set(partitions))


def test_only_partitions_that_left_lose_their_messages() -> None:
    ledger = OffsetLedger()
    for partition in (0, 1, 2):
        ledger.add(partition, 10)
    worker = SimpleNamespace(
        runner=Runner(), ledger=ledger, partitions=frozenset({0, 1, 2}), rebalances=0, _paused=False, name="w"
    )
    listener = _Listener(worker)  # type: ignore[arg-type]
    listener.on_partitions_revoked([TopicPartition("t", p) for p in (0, 1, 2)])
    assert worker.partitions == frozenset()
    listener.on_partitions_assigned([TopicPartition("t", p) for p in (1, 2, 3)])
    assert worker.runner.dropped == [{0}]
    assert worker.partitions == frozenset({1, 2, 3})
    assert ledger.unsettled() == 2, "the messages of partitions 1 and 2 were forgotten"
