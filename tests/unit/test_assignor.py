"""Partitions go to workers with free slots; every partition always has an owner."""

from __future__ import annotations

import pytest

from yadtq.assignor import deal


def test_a_busy_worker_gets_no_partition_while_a_free_one_exists() -> None:
    assert deal(list(range(8)), {"busy": 0, "free": 1}) == {"busy": [], "free": list(range(8))}


def test_when_everyone_is_busy_everyone_gets_a_share() -> None:
    plan = deal(list(range(8)), {"a": 0, "b": 0})
    assert sorted(plan["a"] + plan["b"]) == list(range(8))
    assert len(plan["a"]) == len(plan["b"]) == 4


@pytest.mark.parametrize("free", [{"a": 1, "b": 1, "c": 2}, {"a": 3, "b": 0, "c": 1, "d": 4}, {"solo": 2}])
def test_every_partition_has_exactly_one_owner_in_proportion_to_free_slots(free: dict[str, int]) -> None:
    plan = deal(list(range(12)), free)
    owned = sorted(p for parts in plan.values() for p in parts)
    assert owned == list(range(12))
    total = sum(free.values())
    for member, slots in free.items():
        assert abs(len(plan[member]) - 12 * slots / total) <= 1


def test_every_leader_computes_the_same_plan() -> None:
    assert deal([3, 1, 2, 0], {"b": 1, "a": 1}) == deal([0, 1, 2, 3], {"a": 1, "b": 1})
