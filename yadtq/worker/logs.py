"""Per-task log lines kept across workers and retries, and a JSON log format on request.

A task may run on several workers (a worker dies, another retries it), each with its own log file.
So each worker's :class:`TaskLog` hook appends the lines about a task to one capped Redis list per
task, ``NS:task:ID:logs`` (JSON ``{"at", "worker", "level", "message"}``, oldest first, at most
``task_log_lines``, expiring with the task's record), written from a background thread so the worker
never waits. ``client.logs(task_id)`` / ``yadtq logs TASK_ID`` read them back in one call.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from yadtq.worker.sink import AsyncSink

if TYPE_CHECKING:
    from yadtq.core.config import Config
    from yadtq.core.task import TaskMessage
    from yadtq.worker.events import WorkerView
    from yadtq.worker.executor import Outcome

#: Longest message kept in one log line (a result or an error can be long).
LINE_CHARS = 500


def logs_key(namespace: str, task_id: str) -> str:
    """Beside the task's own keys, so ``purge`` and the namespace pattern cover it."""
    return f"{namespace}:task:{task_id}:logs"


#: ARGV: ns, lines kept per task, ttl (0: none), then for each task: its id, how many lines, the lines
#: (JSON). One command per batch, and per task in it one push of all its lines: as separate
#: RPUSH/LTRIM/EXPIRE commands for each line, they cost a busy worker a tenth of its CPU, and Redis
#: six calls a task (a task's claim and outcome lines usually fall in the same batch).
APPEND = """
local ns, keep, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
while i <= #ARGV do
  local key, n = ns .. ':task:' .. ARGV[i] .. ':logs', tonumber(ARGV[i + 1])
  if redis.call('RPUSH', key, unpack(ARGV, i + 2, i + 1 + n)) > keep then redis.call('LTRIM', key, -keep, -1) end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  i = i + 2 + n
end
"""


class TaskLog(AsyncSink):
    """The worker hook that writes each task's lines to its capped Redis list."""

    name = "task-log"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._redis: Any = None
        self._append: Any = None

    def task_claimed(self, worker: WorkerView, msg: TaskMessage, attempt: int) -> None:
        self._line(worker, msg.id, "INFO", f"attempt {attempt} of {msg.op}{_args(msg)} started on {worker.name}")

    def task_finished(self, worker: WorkerView, msg: TaskMessage, status: str, outcome: Outcome) -> None:
        detail = f": {outcome.error}" if outcome.error else (f" = {outcome.value!r}" if status == "success" else "")
        level = "INFO" if status == "success" else "WARNING"
        self._line(worker, msg.id, level, f"{status} after {outcome.duration:.3f}s{detail}")

    def task_skipped(self, worker: WorkerView, msg: TaskMessage, why: str) -> None:
        self._line(worker, msg.id, "INFO", f"delivery skipped: {why}")

    def worker_stopped(self, worker: WorkerView) -> None:
        self.drain()

    def _line(self, worker: WorkerView, task_id: str, level: str, message: str) -> None:
        line = {"at": time.time(), "worker": worker.name, "level": level, "message": message[:LINE_CHARS]}
        self.put({"task": task_id, "line": line})

    def open_sink(self) -> None:
        from yadtq.store.backend import Backend

        self._redis = Backend(self.config).redis
        self._append = self._redis.register_script(APPEND)

    def write(self, batch: list[dict[str, Any]]) -> None:
        if self._redis is None:
            self.open_sink()
        args: list[Any] = [self.config.namespace, self.config.task_log_lines, int(self.config.result_ttl)]
        lines: dict[str, list[str]] = {}  # task id -> its lines, in order
        for record in batch:
            lines.setdefault(record["task"], []).append(json.dumps(record["line"], default=str))
        for task_id, its in lines.items():
            args += [task_id, len(its), *its]
        self._append(args=args)

    def close_sink(self) -> None:
        if self._redis is not None:
            self._redis.close()


def task_logs(config: Config, task_id: str) -> list[dict[str, Any]]:
    """The task's log lines, oldest first (empty if it has none, or they expired)."""
    from yadtq.store.backend import Backend

    backend = Backend(config)
    try:
        return [json.loads(raw) for raw in backend.redis.lrange(logs_key(config.namespace, task_id), 0, -1)]
    finally:
        backend.close()


def _args(msg: TaskMessage) -> str:
    shown = json.dumps(msg.args)[1:-1]
    return f"({shown[:80]})"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``at``, ``level``, ``logger``, ``message``), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_format(config: Config) -> None:
    """Switch every handler of the root logger to JSON when ``log_format`` asks for it."""
    if config.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
