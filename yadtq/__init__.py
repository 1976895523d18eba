"""yadtq - Yet Another Distributed Task Queue: tasks on Apache Kafka, state in Redis.

::

    from yadtq import Client
    client = Client()                  # endpoints from YADTQ_* or `yadtq up`
    task = client.submit("add", 2, 3)
    task.result(timeout=10)            # -> 5
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yadtq.core._lazy import lazy_attributes
from yadtq.core.config import Config
from yadtq.core.errors import (
    AmbiguousTask,
    BadArguments,
    InvalidTask,
    NotCancellable,
    OperationError,
    ServiceUnavailable,
    TaskFailed,
    TaskTimeout,
    UnknownOperation,
    UnknownTask,
    YadtqError,
)
from yadtq.core.ops import operation, registry
from yadtq.core.task import TaskMessage, TaskStatus

if TYPE_CHECKING:
    from yadtq.client.client import Client, TaskHandle
    from yadtq.processes.pool import Pool
    from yadtq.worker.events import EventStream, Hooks
    from yadtq.worker.worker import Worker

#: Imported on first use: the executor process that runs tasks imports this package too, and needs
#: neither Kafka nor Redis clients (keeps a worker's memory down).
_LAZY = {
    "Client": "yadtq.client.client",
    "TaskHandle": "yadtq.client.client",
    "EventStream": "yadtq.worker.events",
    "Hooks": "yadtq.worker.events",
    "Pool": "yadtq.processes.pool",
    "Worker": "yadtq.worker.worker",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__version__ = "0.1.0"

__all__ = [
    "AmbiguousTask",
    "BadArguments",
    "Client",
    "Config",
    "EventStream",
    "Hooks",
    "InvalidTask",
    "NotCancellable",
    "OperationError",
    "Pool",
    "ServiceUnavailable",
    "TaskFailed",
    "TaskHandle",
    "TaskMessage",
    "TaskStatus",
    "TaskTimeout",
    "UnknownOperation",
    "UnknownTask",
    "Worker",
    "YadtqError",
    "operation",
    "registry",
]
