"""A lost delivery is never final: a task whose message the group consumed without running it runs.

The loss is made by hand, before any worker starts: the task's message is consumed by a stranger in
the workers' own group (the consumer group's offset committed past it; in the share group, the
record acquired and accepted). Kafka will never deliver it again and no worker ever held it, so
neither redelivery nor the reaper can help; only the reconciliation can. Whether the task ran, and
how many times, is the task's own count (``lab.work`` increments it outside the state machine).
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from yadtq import Client
from yadtq.client.client import TaskHandle
from yadtq.core.config import Config
from yadtq.lab.probe import exec_key
from yadtq.processes.pool import Pool
from yadtq.transport.broker import Broker
from yadtq.worker.reconcile import reconcile

pytestmark = [pytest.mark.services, pytest.mark.slow]
PROBE = ("tests.ops_fixture", "yadtq.lab.probe")


def consume_without_running(config: Config, handle: TaskHandle) -> None:
    """Take the task's message out of the workers' group without telling Redis."""
    broker = Broker(config)
    if config.dispatch == "shared":
        member = broker.share_consumer("stranger")
        try:
            assert member.wait_assigned(30), "the stranger got no partition"
            deadline = time.monotonic() + 30
            records = []
            while not records and time.monotonic() < deadline:
                records = member.poll(1, 1.0)
            assert records, "the task's record never reached the stranger"
            member.acknowledge(records[0].partition, records[0].offset)
            member.flush()
        finally:
            member.close()
        return
    consumer = KafkaConsumer(group_id=config.group_id, enable_auto_commit=False, **config.kafka_options())
    try:
        partitions = [TopicPartition(config.task_topic, p) for p in consumer.partitions_for_topic(config.task_topic)]
        ends = consumer.end_offsets(partitions)
        assert sum(ends.values()) == 1, ends
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, ends[tp])
        consumer.commit()
    finally:
        consumer.close()
    assert handle.status().value == "queued"


@pytest.mark.parametrize("dispatch", ["shared", "partitioned"])
def test_a_task_consumed_without_running_is_published_again_and_runs_once(make_config, tmp_path, dispatch) -> None:
    config = make_config(imports=PROBE, dispatch=dispatch, submit_timeout=2.0, lost_after=4.0)
    with Client(config) as client:
        handle = client.submit_with("lab.work", [0.0, "lost"], wait=True)
        consume_without_running(config, handle)
        with Pool(config, log_dir=tmp_path) as pool:
            pool.start(1)
            # queued for lost_after, then up to one turn (lost_after / 2) until a worker looks
            assert handle.result(timeout=config.lost_after * 3 + 10) == 1, "lab.work returns its execution count"
        runs = int(client.backend.redis.get(exec_key(config.namespace, "lost")) or 0)
        assert runs == 1, f"the task ran {runs} times"
        notes = [entry.get("note") or "" for entry in client.history(handle.id)]
        assert any(note.startswith("republished:") and "lost delivery" in note for note in notes), notes


def test_a_task_behind_a_backlog_is_not_taken_for_lost(make_config, tmp_path) -> None:
    """No worker at all: the message is still in the topic, unconsumed, so however long its task has
    waited, the reconciliation leaves it alone (the group has not consumed through its time)."""
    config = make_config(imports=PROBE, dispatch="partitioned", submit_timeout=2.0, lost_after=3.0)
    with Client(config) as client:
        handle = client.submit_with("lab.work", [0.0, "waiting"], wait=True)
        time.sleep(config.lost_after + 0.5)
        assert reconcile(client.backend, Broker(config), config.lost_after) == []
        assert handle.status().value == "queued"
        assert not any((e.get("note") or "").startswith("republished") for e in client.history(handle.id))
