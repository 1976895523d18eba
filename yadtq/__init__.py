"""yadtq - Yet Another Distributed Task Queue: tasks on Apache Kafka, state in Redis.

::

    from yadtq import Client
    client = Client()                  # endpoints from YADTQ_* or `yadtq up`
    task = client.submit("add", 2, 3)
    task.result(timeout=10)            # -> 5
"""

from yadtq.client import Client, TaskHandle
from yadtq.config import Config
from yadtq.errors import (
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
from yadtq.events import EventStream, Hooks
from yadtq.ops import operation, registry
from yadtq.pool import Pool
from yadtq.task import TaskMessage, TaskStatus
from yadtq.worker import Worker

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
