"""Arbitrary bytes and JSON on the task topic: no worker crashes, every bad message is dead-lettered
with a reason, and good tasks sent in between still complete."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from yadtq import Client, InvalidTask
from yadtq.core.config import Config
from yadtq.core.errors import MalformedMessage
from yadtq.core.ops import registry
from yadtq.core.task import TaskMessage
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
near_tasks = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", None]),
        "id": st.text(max_size=70) | st.integers(),
        "op": st.sampled_from(["add", "div", "factorial", "nope", ""]) | st.integers(),
        "args": st.lists(json_values, max_size=3) | json_values,
        "kwargs": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values,
    },
    optional={"max_retries": json_values, "time_limit": json_values, "extra": json_values},
)
messages = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_tasks.map(lambda v: json.dumps(v).encode()),
)


def runnable(value: bytes, config: Config) -> bool:
    """What the worker will decide, computed independently of it: valid message and arguments."""
    try:
        msg = TaskMessage.decode(value, config.max_message_bytes)
        registry.get(msg.op).check(msg.args, msg.kwargs)
    except (MalformedMessage, InvalidTask):
        return False
    return True


@settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages, min_size=5, max_size=30))
def test_fuzzed_messages_are_dead_lettered_and_workers_survive(
    batch: list[bytes], config: Config, client: Client, pool: Pool
) -> None:
    if not pool.processes:
        pool.start(2)
        client.broker.ensure_topics()
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    letters_before = len(client.backend.dead_letters(limit=100_000))
    good = []
    try:
        for i, value in enumerate(batch):
            producer.send(config.task_topic, value).get(timeout=10)
            good.append((client.submit("add", i, 1), i + 1))
    finally:
        producer.close()
    assert [h.result(timeout=60) for h, _ in good] == [expected for _, expected in good]
    bad = sum(not runnable(v, config) for v in batch)
    deadline = time.monotonic() + 30
    while len(client.backend.dead_letters(limit=100_000)) - letters_before < bad and time.monotonic() < deadline:
        time.sleep(0.1)
    letters = client.backend.dead_letters(limit=100_000)
    assert len(letters) - letters_before == bad
    assert all(letter["reason"] for letter in letters)
    assert sorted(pool.alive()) == sorted(pool.processes), "a worker crashed"
