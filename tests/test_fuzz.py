"""Arbitrary bytes and JSON on the task topic: no worker crashes, every message the wire format
refuses is dead-lettered with a reason and no other is, and good tasks sent in between still
complete.

Which messages must be refused is decided here, by :func:`refusal`, written from docs/protocol.md
("The task message") and the operations' documented signatures, without the worker's decoder or
the operations' registry: a check that asked the decoder would agree with any decoder.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from yadtq import Client
from yadtq.core.config import Config
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]


# --- the oracle: docs/protocol.md, "The task message (version 1)" ---------------------------------
def _integer(value: Any) -> bool:
    """A JSON number without a fraction or an exponent (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return _integer(value) or (isinstance(value, float) and math.isfinite(value))


REQUIRED = {
    "v": _integer,
    "id": lambda v: isinstance(v, str),
    "op": lambda v: isinstance(v, str),
    "args": lambda v: isinstance(v, list),
    "kwargs": lambda v: isinstance(v, dict),
}
OPTIONAL = {
    "submitted_at": _number,
    "max_retries": lambda v: v is None or _integer(v),
    "time_limit": lambda v: v is None or _number(v),
    "retry_errors": lambda v: isinstance(v, bool),
}
#: The operations the fuzzer names, as ``yadtq ops`` and the README document them: their parameters
#: in order, each with what it accepts. Any other name is an unknown operation.
OPERATIONS: dict[str, tuple[tuple[str, Any], ...]] = {
    "add": (("a", _number), ("b", _number)),
    "div": (("a", _number), ("b", _number)),
    "factorial": (("n", lambda n: _integer(n) and 0 <= n <= 1000),),
}


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def refusal(value: bytes, max_bytes: int) -> str | None:
    """Why the documented wire format refuses this message, or None if a worker must take it."""
    if len(value) > max_bytes:
        return "oversized"
    try:
        obj = json.loads(value.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not UTF-8 JSON"
    if not isinstance(obj, dict):
        return "not an object"
    for name, fits in REQUIRED.items():
        if name not in obj or not fits(obj[name]):
            return f"{name} missing or of the wrong type"
    for name, fits in OPTIONAL.items():
        if name in obj and not fits(obj[name]):
            return f"{name} of the wrong type"
    if set(obj) - set(REQUIRED) - set(OPTIONAL):
        return "unknown field"
    if obj["v"] != 1:
        return "version"
    if not 1 <= len(obj["id"]) <= 64 or any(not 0x20 <= ord(c) <= 0x7E for c in obj["id"]):
        return "id not 1-64 printable ASCII characters"
    params = OPERATIONS.get(obj["op"])
    if params is None:
        return "unknown operation"
    args, kwargs = obj["args"], obj["kwargs"]
    if len(args) > len(params):
        return "too many arguments"
    bound = dict(zip((name for name, _ in params), args, strict=False))
    for name, value in kwargs.items():
        if name in bound or name not in dict(params):
            return f"unexpected or repeated argument {name!r}"
        bound[name] = value
    for name, fits in params:
        if name not in bound:
            return f"missing argument {name!r}"
        if not fits(bound[name]):
            return f"argument {name!r} refused"
    return None


# --- what the fuzzer sends --------------------------------------------------------------------------
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
numbers = st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6)
#: Messages a worker must take: each operation with arguments it accepts, by position or by name.
valid_tasks = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "id": st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64),
        "call": st.one_of(
            st.tuples(st.sampled_from(["add", "div"]), st.lists(numbers, min_size=2, max_size=2), st.just({})),
            st.tuples(st.just("add"), st.lists(numbers, min_size=1, max_size=1), st.fixed_dictionaries({"b": numbers})),
            st.tuples(st.just("factorial"), st.lists(st.integers(0, 1000), min_size=1, max_size=1), st.just({})),
            st.tuples(st.just("factorial"), st.just([]), st.fixed_dictionaries({"n": st.integers(0, 1000)})),
        ),
    },
    optional={
        "submitted_at": st.floats(0, 2e9),
        "max_retries": st.none() | st.integers(0, 3),
        "time_limit": st.none() | st.floats(1, 30),
        "retry_errors": st.booleans(),
    },
).map(
    lambda t: {
        **{k: v for k, v in t.items() if k != "call"},
        **dict(zip(("op", "args", "kwargs"), t["call"], strict=True)),
    }
)
DROP = object()


def _one_off(task: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    changed = {k: v for k, v in task.items() if k != name}
    if value is not DROP:
        changed[name] = value
    return changed


#: A message of the right shape with one field changed, dropped or added: the messages a decoder
#: is most likely to judge wrongly.
one_off_tasks = st.builds(
    _one_off,
    valid_tasks,
    st.sampled_from([*REQUIRED, *OPTIONAL, "extra"]),
    st.just(DROP) | st.sampled_from([1, 2, "1", True, 1.0, -1, 1001, "", "x" * 65, "\t", [], {}]) | json_values,
)
#: What every field of a valid message is changed to, one at a time, in the first batch.
CHANGES = [DROP, None, True, 1, 2, -1, 1.5, 1001, "", "1", "x" * 65, "\t", "é", [], [1, 2], {}, {"a": 1}]


def every_one_field_change() -> list[bytes]:
    """A valid message with each field (and one unknown) dropped or changed to each of ``CHANGES``:
    what no batch of 5 random examples is likely to cover, every rule of the format once."""
    base = {"v": 1, "id": "edge", "op": "add", "args": [2, 3], "kwargs": {}}
    return [
        json.dumps(_one_off({**base, "id": f"edge-{name}-{i}"}, name, value)).encode()
        for name in [*REQUIRED, *OPTIONAL, "extra"]
        for i, value in enumerate(CHANGES)
    ]


messages = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_tasks.map(lambda v: json.dumps(v).encode()),
    valid_tasks.map(lambda v: json.dumps(v).encode()),
    *[one_off_tasks.map(lambda v: json.dumps(v).encode())] * 4,
)


@settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages, min_size=10, max_size=30))
def test_fuzzed_messages_are_dead_lettered_and_workers_survive(
    batch: list[bytes], config: Config, client: Client, pool: Pool
) -> None:
    if not pool.processes:
        pool.start(2)
        client.broker.ensure_topics()
        batch = every_one_field_change() + batch
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    letters_before = len(client.backend.dead_letters(limit=100_000))
    good, sending = [], []
    try:
        for i, value in enumerate(batch):
            sending.append((producer.send(config.task_topic, value), value))
            if i % 10 == 0:
                good.append((client.submit("add", i, 1), i + 1))
        producer.flush(timeout=10)
        sent = {(m.partition, m.offset): value for future, value in sending for m in [future.get(timeout=10)]}
    finally:
        producer.close()
    assert [h.result(timeout=60) for h, _ in good] == [expected for _, expected in good]
    refused = {where: why for where, value in sent.items() if (why := refusal(value, config.max_message_bytes))}
    deadline = time.monotonic() + 30
    while len(client.backend.dead_letters(limit=100_000)) - letters_before < len(refused):
        if time.monotonic() > deadline:
            break  # the comparison below says which are missing
        time.sleep(0.1)
    letters = client.backend.dead_letters(limit=100_000)
    new = letters[: len(letters) - letters_before]  # newest first
    lettered = {(letter["partition"], letter["offset"]) for letter in new}
    wrong = [
        f"offset {where}: {'dead-lettered' if where in lettered else 'taken'}, the format says "
        f"{refused.get(where) or 'valid'}: {sent.get(where, b'(not a fuzzed message)')[:120]!r}"
        for where in sorted(lettered ^ set(refused))
    ]
    assert not wrong, "the queue's verdicts differ from the wire format's:\n" + "\n".join(wrong)
    assert all(letter["reason"] for letter in new)
    assert sorted(pool.alive()) == sorted(pool.processes), "a worker crashed"
