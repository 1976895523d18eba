"""Which partition a submitted task goes to (no services needed)."""

from __future__ import annotations

from collections import Counter

from yadtq.core.task import new_id
from yadtq.transport.broker import KeyPartitioner, partition_of


class Cluster:
    """The two questions kafka-python's partitioners ask of its cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


def test_task_ids_spread_evenly_and_each_always_goes_to_the_same_partition() -> None:
    partitioner, cluster = KeyPartitioner(), Cluster(8)
    ids = [new_id().encode() for _ in range(16_000)]
    chosen = [partitioner.partition("t", None, key, b"", b"", cluster) for key in ids]
    assert chosen == [partition_of(key, 8) for key in ids]
    counts = Counter(chosen)
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.1 * 2_000 and min(counts.values()) > 0.9 * 2_000, counts


def test_a_message_without_a_key_goes_to_some_partition() -> None:
    chosen = {KeyPartitioner().partition("t", None, None, b"", b"", Cluster(4)) for _ in range(200)}
    assert chosen <= {0, 1, 2, 3} and len(chosen) > 1
