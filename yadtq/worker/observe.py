"""The monitoring hooks a worker runs: the Kafka event log and the per-task logs, per the settings.

``yadtq worker`` (and so every ``Pool`` worker) builds its :class:`~yadtq.worker.worker.Worker` with these,
so monitoring needs no change in the worker loop itself.
"""

from __future__ import annotations

from yadtq.core.config import Config
from yadtq.worker.events import Hooks


def worker_hooks(config: Config) -> list[Hooks]:
    """The hooks ``event_log`` and ``task_log_lines`` ask for; also applies ``log_format``."""
    from yadtq.worker.history import EventLog
    from yadtq.worker.logs import TaskLog, configure_format

    configure_format(config)
    hooks: list[Hooks] = []
    if config.event_log:
        hooks.append(EventLog(config))
    if config.task_log_lines:
        hooks.append(TaskLog(config))
    return hooks
