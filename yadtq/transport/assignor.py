"""Partitions go to workers that can serve them: the group's assignment strategy.

Kafka's stock strategies split partitions evenly, whatever each member is doing. A worker whose
every slot is taken by a long task would then hold partitions it cannot serve, and the short tasks
behind them wait for it. Here each member says at join time how many free slots it has (in the
subscription's user data), and the leader deals the partitions out among the members with free
slots only, in proportion to them. When nobody has a free slot, everyone gets an even share, so
that every partition always has an owner that polls it. (A slot counts as taken only by a task
running ``shed_after`` or longer: see ``Runner.able``.)

A worker with no free slot keeps nothing, not even the partition of its running task: whoever owns that
partition next finds the message, sees in Redis that a live worker holds the task, and waits for
its outcome before committing past it (see ``Runner``). That keeps the other messages of the
partition flowing instead of queueing behind the long task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription


def deal(partitions: list[int], free: dict[str, int]) -> dict[str, list[int]]:
    """Assign ``partitions`` to members by their free slots (the pure rule, tested on its own)."""
    members = sorted(free)
    takers = [m for m in members if free[m] > 0] or members
    weight = {m: max(free[m], 1) for m in takers}
    out: dict[str, list[int]] = {m: [] for m in members}
    for partition in sorted(partitions):
        # The member furthest below its share; ties by name, so every leader computes the same.
        owner = min(takers, key=lambda m: (len(out[m]) / weight[m], m))
        out[owner].append(partition)
    return out


class CapacityAssignor(AbstractPartitionAssignor):
    """The Kafka side of :func:`deal`; ``free_slots`` is asked at every join."""

    name = "yadtq-capacity"
    version = 0

    def __init__(self, free_slots: Callable[[], int]) -> None:
        self.free_slots = free_slots

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = json.dumps({"free": int(self.free_slots())}).encode()
        return ConsumerProtocolSubscription(self.version, list(topics), user_data)

    def assign(self, cluster: Any, members: Any) -> dict[str, ConsumerProtocolAssignment]:
        free: dict[str, int] = {}
        topics: set[str] = set()
        for member in members:
            topics.update(member.metadata.topics)
            try:
                free[member.member_id] = int(json.loads(member.metadata.user_data or b"{}").get("free", 1))
            except (ValueError, AttributeError, TypeError):
                free[member.member_id] = 1  # a member without our user data: treat it as able
        plan: dict[str, dict[str, list[int]]] = {m: {} for m in free}
        for topic in sorted(topics):
            partitions = sorted(cluster.partitions_for_topic(topic) or [])
            for member_id, assigned in deal(partitions, free).items():
                if assigned:
                    plan[member_id][topic] = assigned
        return {
            member_id: ConsumerProtocolAssignment(self.version, sorted(by_topic.items()), b"")
            for member_id, by_topic in plan.items()
        }

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        pass
