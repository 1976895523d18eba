"""Partitions go to workers with free slots; every partition always has an owner."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.transport.assignor import deal
from yadtq.worker.runner import Run, Runner


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


def test_a_slot_counts_as_taken_only_once_its_task_has_run_shed_after(tmp_path) -> None:
    """What a worker announces at a join: a task younger than ``shed_after`` leaves its slot free
    (it will end like any short one), an older one takes it; with shedding off every slot is free."""
    config = Config.from_env(env={}, home=tmp_path, concurrency=3)
    runner = Runner(SimpleNamespace(config=config))  # type: ignore[arg-type]
    try:
        now = time.monotonic()
        for slot, started in zip(runner.slots, (now - 5.0, now - 0.1), strict=False):
            run = Run(slot, TaskMessage(op="add", args=[1, 2]), 1, [], now + 60, started)
            runner.running[run.msg.id] = run
        assert runner.free() == 1
        assert runner.able(2.0) == 2  # the 5-second task takes its slot, the young one does not
        assert runner.able(10.0) == 3
        assert runner.able(0.0) == 3
        assert runner.able(0.05) == 1
    finally:
        runner.close()
