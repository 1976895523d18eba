"""Runs operations in a child process, so that a task can be stopped without stopping its worker.

A Python thread cannot be killed, and a task that loops forever or segfaults must not take the
worker (its heartbeats, its Kafka membership, its other tasks) down with it. So each slot of a worker
keeps one long-lived child process and sends it one task at a time over a pipe, as JSON. On a time limit the
child is killed and a fresh one started; if the child dies on its own, that is an infrastructure
failure (retried), not an error of the operation.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from yadtq.ops import load_imports, registry
from yadtq.task import json_safe


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: ``ok`` (with ``value``), ``error``, ``timeout`` or ``crashed``."""

    kind: str
    value: Any = None
    error: str = ""
    duration: float = 0.0


class Executor:
    def __init__(self, imports: tuple[str, ...] = ()) -> None:
        self.imports = imports
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def connection(self) -> Connection | None:
        """Readable when an outcome is ready or the child died: for ``multiprocessing.connection.wait``."""
        return self._conn

    def start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.imports), daemon=True, name="yadtq-executor")
        self._proc.start()
        child.close()
        self._conn = parent

    def submit(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.start()
        assert self._conn is not None
        self._started_at = time.monotonic()
        self._conn.send_bytes(json.dumps([op, args, kwargs]).encode())

    def wait(self, timeout: float) -> Outcome | None:
        """The outcome of the submitted task, or None if it is still running after ``timeout``."""
        assert self._conn is not None and self._proc is not None
        try:
            if not self._conn.poll(timeout):
                if self._proc.is_alive():
                    return None
                raise EOFError
            kind, payload = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            code = self._proc.exitcode
            self.kill()
            return Outcome(
                "crashed",
                error=f"ExecutorCrashed: the process running the task exited ({code})",
                duration=self._elapsed(),
            )
        if kind == "ok":
            return Outcome("ok", value=json.loads(payload), duration=self._elapsed())
        return Outcome("error", error=payload, duration=self._elapsed())

    def kill(self) -> None:
        """Stop the child now (time limit, shutdown); the next submit starts a fresh one."""
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send_bytes(b"null")
                self._proc.join(timeout=2)
            except OSError:
                pass
        self.kill()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started_at


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the worker dies, so a SIGKILLed worker leaves no orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn: Connection, imports: tuple[str, ...]) -> None:
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what happens to the task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    load_imports(imports)
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if request is None:
            return
        op, args, kwargs = request
        try:
            value = registry.get(op).func(*args, **kwargs)
            if not json_safe(value):
                raise TypeError(f"result of {op} is not JSON: {type(value).__name__}")
            reply = ["ok", json.dumps(value)]
        except Exception as exc:  # any failure of the operation fails the task, not the executor
            reply = ["error", f"{type(exc).__name__}: {exc}"]
        conn.send_bytes(json.dumps(reply).encode())
