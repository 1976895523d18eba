"""One exception tree, split the way a caller needs to react.

- :class:`InvalidTask` and its children: the caller's mistake (a bad task, or an id that names no
  task); nothing was sent, fix the input.
- :class:`ServiceUnavailable`: Kafka or Redis did not answer in time; nothing half-recorded, retry later.
- :class:`TaskFailed` / :class:`TaskTimeout`: the task ran (or did not finish in time) - its outcome.
- :class:`MalformedMessage`: a message on the wire that no worker can run; it is dead-lettered.
"""

from __future__ import annotations


class YadtqError(Exception):
    """Root of every error yadtq raises on purpose."""


class ConfigError(YadtqError):
    """A setting is missing or out of range."""


class ServiceError(YadtqError):
    """A local service (Kafka, Redis) could not be set up, started or stopped."""


class ServiceUnavailable(YadtqError):
    """Kafka or Redis did not answer within the configured time."""


class InvalidTask(YadtqError):
    """A task was refused before anything was sent."""


class UnknownOperation(InvalidTask):
    """The operation name is not in the registry."""


class BadArguments(InvalidTask):
    """The arguments do not fit the operation (count, type, or a safety limit)."""


class UnknownTask(InvalidTask):
    """No task has this id (or id prefix): it was never submitted, or its record expired."""


class AmbiguousTask(InvalidTask):
    """An id prefix matches several tasks; a longer prefix picks one."""


class OperationError(Exception):
    """Raised by an operation to fail its task with a clear message (not a worker fault)."""


class MalformedMessage(YadtqError):
    """A wire message that cannot become a task; ``reason`` is what the dead-letter record says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveriesExhausted(YadtqError):
    """A record the share group handed out ``max_deliveries`` times: every worker that held it died
    or stalled, so it is dead-lettered rather than given to one more."""


class TaskFailed(YadtqError):
    """The task ran and failed (or was cancelled); ``error`` is what the worker recorded."""

    def __init__(self, task_id: str, status: str, error: str) -> None:
        super().__init__(f"task {task_id} {status}: {error}")
        self.task_id = task_id
        self.status = status
        self.error = error


class TaskTimeout(YadtqError):
    """Waiting for a result took longer than the caller allowed; the task itself goes on."""


class NotCancellable(YadtqError):
    """Only a task that has not started can be cancelled."""
