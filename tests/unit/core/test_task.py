"""The wire message: what decodes, what is refused, and why (no services needed)."""

from __future__ import annotations

import json

import pytest

from yadtq.core.errors import MalformedMessage
from yadtq.core.task import PROTOCOL_VERSION, TaskMessage, TaskStatus, json_safe


def test_a_message_survives_a_round_trip() -> None:
    msg = TaskMessage(op="add", args=[1, 2.5], kwargs={"x": [1]}, max_retries=2, time_limit=3.5, retry_errors=True)
    assert TaskMessage.decode(msg.encode()) == msg
    assert json.loads(msg.encode())["v"] == PROTOCOL_VERSION


def test_optional_fields_have_defaults_so_minimal_messages_decode() -> None:
    msg = TaskMessage.decode(b'{"v": 1, "id": "abc", "op": "add", "args": [1, 2], "kwargs": {}}')
    assert (msg.id, msg.max_retries, msg.time_limit, msg.retry_errors) == ("abc", None, None, False)
    # what a worker stores with the record, to publish it again, is the message as it came
    assert msg.encode() == b'{"v": 1, "id": "abc", "op": "add", "args": [1, 2], "kwargs": {}}'
    assert TaskMessage.decode(msg.encode().decode()).encode() == msg.encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        ('{"v": 1, "id": "\ud800", "op": "add", "args": [], "kwargs": {}}', "not JSON"),  # not UTF-8
        (b"{", "not JSON"),
        (b'{"v": 1, "id": "a", "op": "add", "args": [NaN], "kwargs": {}}', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "a", "op": "add", "args": [], "kwargs": {}}', "missing field 'v'"),
        (b'{"v": 2, "id": "a", "op": "add", "args": [], "kwargs": {}}', "unsupported schema version 2"),
        (b'{"v": true, "id": "a", "op": "add", "args": [], "kwargs": {}}', "field 'v' must be int"),
        (b'{"v": 1, "id": "", "op": "add", "args": [], "kwargs": {}}', "'id' must be 1-64"),
        (b'{"v": 1, "id": "a", "op": "add", "args": {}, "kwargs": {}}', "field 'args' must be list"),
        (b'{"v": 1, "id": "a", "op": "add", "args": [], "kwargs": {}, "max_retries": "3"}', "'max_retries' has"),
        (b'{"v": 1, "id": "a", "op": "add", "args": [], "kwargs": {}, "retry_errors": 1}', "'retry_errors' has"),
        (b'{"v": 1, "id": "a", "op": "add", "args": [], "kwargs": {}, "pickle": "x"}', "unknown field(s): pickle"),
    ],
)
def test_malformed_messages_say_why(raw: bytes | str, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        TaskMessage.decode(raw)
    assert reason in caught.value.reason


def test_oversized_messages_are_refused_before_parsing() -> None:
    with pytest.raises(MalformedMessage, match="oversized: 101 bytes"):
        TaskMessage.decode(b" " * 101, max_bytes=100)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedMessage):
        TaskMessage.decode(b"[" * 100_000, max_bytes=1_000_000)


def test_status_values_and_terminal_states() -> None:
    assert TaskStatus("queued") is TaskStatus.QUEUED and str(TaskStatus.SUCCESS) == "success"
    assert {s.value for s in TaskStatus if s.terminal} == {"success", "failed", "cancelled"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (1, True),
        (1.5, True),
        (float("nan"), False),
        (float("inf"), False),
        ([1, {"a": None}], True),
        ((1, 2), False),
        ({1: 2}, False),
        (object(), False),
        ("x", True),
    ],
)
def test_json_safe(value: object, ok: bool) -> None:
    assert json_safe(value) is ok
