"""The offset ledger: out-of-order outcomes, in-order commits."""

from __future__ import annotations

from yadtq.transport.ledger import OffsetLedger


def test_a_partition_is_committed_only_up_to_its_lowest_unsettled_offset() -> None:
    ledger = OffsetLedger()
    for offset in (10, 11, 12):
        ledger.add(0, offset)
    ledger.settle(0, 12)
    ledger.settle(0, 11)
    assert ledger.commit_points() == {0: 10}, "committed past a message still running"
    ledger.settle(0, 10)
    assert ledger.commit_points() == {0: 13}
    assert ledger.commit_points() == {}, "a commit point handed out twice"


def test_partitions_are_independent_and_a_revoked_one_is_forgotten() -> None:
    ledger = OffsetLedger()
    ledger.add(0, 5)
    ledger.add(1, 7)
    ledger.settle(1, 7)
    assert ledger.commit_points() == {0: 5, 1: 8}
    ledger.forget([1])
    ledger.settle(1, 7)  # a late outcome for a partition now owned by another worker
    assert ledger.commit_points() == {}
    assert ledger.unsettled() == 1


def test_a_refetched_offset_is_not_counted_twice() -> None:
    ledger = OffsetLedger()
    ledger.add(0, 3)
    ledger.add(0, 3)  # seen again (a seek back); still one message
    ledger.settle(0, 3)
    assert ledger.commit_points() == {0: 4}
    assert ledger.unsettled() == 0


def test_a_refused_commit_is_offered_again() -> None:
    ledger = OffsetLedger()
    ledger.add(0, 1)
    ledger.settle(0, 1)
    points = ledger.commit_points()
    assert points == {0: 2}
    assert ledger.commit_points() == {}
    ledger.retry(points)
    assert ledger.commit_points() == {0: 2}
