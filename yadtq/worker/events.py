"""Lifecycle events: hooks inside a worker, and the broadcast stream every client can follow.

Two audiences, two mechanisms:

- In the worker process, :class:`Hooks` subclasses get a call at each step of the loop (no-op by
  default, so a hook implements only what it needs). Logging, metrics, the lab's probes and future
  sinks (a Kafka event log for replay) are hooks; a failing hook is logged and never stops the worker.
- Everywhere else, :class:`EventStream` follows the Redis pub/sub channel on which the state
  scripts publish every status change and heartbeat as JSON (``docs/protocol.md``), so a dashboard
  in any notebook sees what every worker does, live.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from yadtq.core.config import Config
from yadtq.store.backend import Backend

if TYPE_CHECKING:
    from yadtq.core.task import TaskMessage
    from yadtq.worker.executor import Outcome

log = logging.getLogger(__name__)


class WorkerView(Protocol):
    """The worker that calls a hook, as far as a hook reads it: a :class:`~yadtq.worker.worker.Worker`.

    A protocol rather than the class itself, because the worker imports this module.
    """

    config: Config
    name: str
    state: str
    dispatch: str
    partitions: frozenset[int]
    started_at: float

    @property
    def handled(self) -> int: ...

    @property
    def current(self) -> list[TaskMessage]: ...


class Hooks:
    """Override the steps you care about; every method is called from the worker's main thread,
    except :meth:`heartbeat`, which runs on the heartbeat thread."""

    def worker_started(self, worker: WorkerView) -> None: ...

    def worker_stopped(self, worker: WorkerView) -> None: ...

    def task_claimed(self, worker: WorkerView, msg: TaskMessage, attempt: int) -> None: ...

    def task_finished(self, worker: WorkerView, msg: TaskMessage, status: str, outcome: Outcome) -> None: ...

    def task_skipped(self, worker: WorkerView, msg: TaskMessage, why: str) -> None: ...

    def dead_lettered(self, worker: WorkerView, record: dict[str, Any]) -> None: ...

    def heartbeat(self, worker: WorkerView) -> None: ...


def emit(hooks: Sequence[Hooks], step: str, *args: Any) -> None:
    """Call ``step`` on every hook; a hook's exception is logged, never raised into the worker."""
    for hook in hooks:
        try:
            getattr(hook, step)(*args)
        except Exception:
            log.exception("hook %s.%s failed", type(hook).__name__, step)


class EventStream:
    """Iterate over live events (dicts with a ``type`` of task, heartbeat, worker or dead_letter).

    ``for event in EventStream(config, timeout=10): ...`` stops after ``timeout`` seconds without an
    event, so a loop over it never blocks forever.
    """

    def __init__(self, config: Config | None = None, timeout: float = 5.0) -> None:
        self.config = config or Config.from_env()
        self.timeout = timeout
        self._backend = Backend(self.config)
        self._pubsub = self._backend.redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self._backend.keys.events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < self.timeout:
            message = self._pubsub.get_message(timeout=min(0.5, self.timeout))
            if message and message.get("type") == "message":
                idle_since = time.monotonic()
                yield json.loads(message["data"])

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one: a background listener
        wakes at least this often, so it notices that it was asked to stop."""
        message = self._pubsub.get_message(timeout=timeout)
        if message and message.get("type") == "message":
            return dict(json.loads(message["data"]))
        return None

    def close(self) -> None:
        self._pubsub.close()
        self._backend.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
