"""The stranded-consumer watchdog: when Kafka's group forgets a worker that still polls, it rejoins.

Seen under CPU load with kafka-python 3.0: a lost SyncGroup response leaves the consumer waiting in a
rebalance while the group settles without it. The decision logic is tested here with a stub broker;
the recovery itself was measured against the real broker (see docs/reliability.md).
"""

from __future__ import annotations

import pytest

from yadtq.core.config import Config
from yadtq.worker.worker import Worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch, tmp_path) -> tuple[Worker, Clock, list[set[str] | None]]:
    clock = Clock()
    monkeypatch.setattr("yadtq.worker.worker.time.monotonic", clock)
    w = Worker(Config.from_env(env={}, home=tmp_path), name="w1")
    answers: list[set[str] | None] = []
    monkeypatch.setattr(w.broker, "group_members", lambda: answers.pop(0))
    return w, clock, answers


def test_a_worker_the_group_forgot_is_stranded(worker) -> None:
    w, clock, answers = worker
    assert not w._stranded()  # starts the clock
    clock.now += 2 * w.config.session_timeout - 1
    assert not w._stranded(), "judged too early"
    clock.now += 2
    answers.append({"w2"})
    assert w._stranded()


def test_an_idle_member_beyond_the_partition_count_is_not_stranded(worker) -> None:
    w, clock, answers = worker
    w._stranded()
    clock.now += 60
    answers.append({"w1", "w2"})
    assert not w._stranded()
    clock.now += 1
    assert not w._stranded(), "asked Kafka again within the same window"


def test_no_judgement_while_the_group_rebalances_or_with_partitions(worker) -> None:
    w, clock, answers = worker
    w._stranded()
    clock.now += 60
    answers.append(None)  # rebalancing, or Kafka unreachable
    assert not w._stranded()
    w.partitions = frozenset({0})
    clock.now += 60
    assert not w._stranded()
    assert answers == []
