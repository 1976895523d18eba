"""The task on the wire (:class:`TaskMessage`) and its life cycle (:class:`TaskStatus`).

The message is the contract with every producer, including ones not written in Python, so it is
plain JSON with a version field (``docs/protocol.md``). New fields must get defaults so that
messages written by an older client still decode.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from yadtq.core.errors import MalformedMessage

PROTOCOL_VERSION = 1


class TaskStatus(StrEnum):
    """Where a task is in its life; the value is what Redis stores and the CLI prints."""

    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED})

_REQUIRED = {"v": int, "id": str, "op": str, "args": list, "kwargs": dict}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "submitted_at": (int, float),
    "max_retries": (int, type(None)),
    "time_limit": (int, float, type(None)),
    "retry_errors": (bool,),
}


def new_id() -> str:
    """128 random bits as 32 hex digits, like ``uuid4().hex``, from the process's PRNG (seeded from the
    OS, reseeded after fork): ``os.urandom`` costs a system call per id, and ids need to be unique,
    not secret."""
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True)
class TaskMessage:
    """One task as it travels through Kafka."""

    op: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    submitted_at: float = field(default_factory=time.time)
    #: Retries for infrastructure failures; None means the worker's configured default.
    max_retries: int | None = None
    #: Seconds the task may run; None means the worker's configured default.
    time_limit: float | None = None
    #: Also retry when the operation itself raises or times out (off: such errors are final).
    retry_errors: bool = False
    v: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies the arguments, the largest cost of a submit.
        return {f: getattr(self, f) for f in _FIELDS}

    def encode(self) -> bytes:
        """The wire form; computed once per message (a submit needs it twice)."""
        cached = self.__dict__.get("_encoded")
        if cached is None:
            cached = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()
            object.__setattr__(self, "_encoded", cached)
        return cached

    @classmethod
    def decode(cls, data: bytes | str, max_bytes: int = 64 * 1024) -> TaskMessage:
        """Parse and check a wire message; any problem raises :class:`MalformedMessage`."""
        if len(data) > max_bytes:
            raise MalformedMessage(f"oversized: {len(data)} bytes, the limit is {max_bytes}")
        try:
            wire = data.encode() if isinstance(data, str) else data
            obj = _DECODER.decode(wire.decode())  # UTF-8, as docs/protocol.md says
        except (ValueError, UnicodeError, RecursionError) as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
        msg = cls.from_dict(obj)
        # Its wire form is what it came as: a worker stores it with the task's record (to publish it
        # again after a crash), and encoding it anew cost a busy worker 3% of its CPU.
        object.__setattr__(msg, "_encoded", wire)
        return msg

    @classmethod
    def from_dict(cls, obj: Any) -> TaskMessage:
        if not isinstance(obj, dict):
            raise MalformedMessage(f"not a JSON object but {type(obj).__name__}")
        for name, kind in _REQUIRED.items():
            if name not in obj:
                raise MalformedMessage(f"missing field {name!r}")
            if not isinstance(obj[name], kind) or (kind is int and isinstance(obj[name], bool)):
                raise MalformedMessage(f"field {name!r} must be {kind.__name__}")
        if obj["v"] != PROTOCOL_VERSION:
            raise MalformedMessage(f"unsupported schema version {obj['v']} (this worker speaks {PROTOCOL_VERSION})")
        if not obj["id"] or len(obj["id"]) > 64 or not obj["id"].isascii() or not obj["id"].isprintable():
            raise MalformedMessage("field 'id' must be 1-64 printable ASCII characters")
        for name, kinds in _OPTIONAL.items():
            if name in obj and (not isinstance(obj[name], kinds) or _is_bool_number(obj[name], kinds)):
                raise MalformedMessage(f"field {name!r} has the wrong type")
        unknown = set(obj) - set(_REQUIRED) - set(_OPTIONAL)
        if unknown:
            raise MalformedMessage(f"unknown field(s): {', '.join(sorted(unknown))}")
        return cls(**obj)


_FIELDS = tuple(f.name for f in fields(TaskMessage))


def _is_bool_number(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, bool) and bool not in kinds


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every message: ``json.loads`` with an option builds a new one for each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def json_safe(value: Any) -> bool:
    """True if ``value`` survives a JSON round trip unchanged (no NaN, tuples, or objects)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_safe(v) for k, v in value.items())
    return False
