"""Runs operations in a child process, so that a task can be stopped without stopping its worker.

A Python thread cannot be killed, and a task that loops forever or segfaults must not take the
worker (its heartbeats, its Kafka membership, its other tasks) down with it. So each slot of a worker
keeps one long-lived child process and sends it one task at a time over a pipe, as JSON. On a time
limit the child is killed and a fresh one started; if the child dies on its own, that is an
infrastructure failure (retried), not an error of the operation.

The child is a plain ``python -m yadtq.worker.executor`` with two pipes, not a ``multiprocessing`` process:
that would also start multiprocessing's resource tracker (one more process per worker) and re-import
the worker's main module, for nothing an executor needs.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from yadtq.core.ops import load_imports, registry
from yadtq.core.task import json_safe


def readable(fds: list[int], timeout: float) -> set[int]:
    """Which of ``fds`` can be read now (data, or the other end closed), waiting up to ``timeout``
    seconds for one. A bare ``poll``: ``multiprocessing.connection.wait`` builds a selector for each
    call, 25 µs here against 3, and a worker waits twice per task."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}


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
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def fileno(self) -> int | None:
        """Readable when an outcome is ready or the child died: for :func:`readable`."""
        return self._conn.fileno() if self._conn is not None else None

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "yadtq.worker.executor", str(to_child_r), str(from_child_w), ",".join(self.imports)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._conn = _Duplex(from_child_r, to_child_w)

    def submit(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.start()
        assert self._conn is not None
        self._started_at = time.monotonic()
        self._conn.send_bytes(json.dumps([op, args, kwargs]).encode())

    def wait(self, timeout: float) -> Outcome | None:
        """The outcome of the submitted task, or None if it is still running after ``timeout``."""
        assert self._conn is not None and self._proc is not None
        try:
            if not readable([self._conn.fileno()], timeout):
                if self._proc.poll() is None:
                    return None
                raise EOFError
            kind, payload = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            code = self._proc.wait(timeout=5)
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
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            try:
                self._conn.send_bytes(b"null")
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started_at


class _Duplex(Connection):
    """A Connection over two one-way pipes: reads from one fd, writes to the other."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        super().__init__(read_fd, readable=True, writable=False)
        self._out = Connection(write_fd, readable=False, writable=True)

    def send_bytes(self, buf: bytes, offset: int = 0, size: int | None = None) -> None:  # type: ignore[override]
        self._out.send_bytes(buf, offset, size)

    def close(self) -> None:
        self._out.close()
        super().close()


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the worker dies, so a SIGKILLed worker leaves no orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(requests: Connection, replies: Connection, imports: tuple[str, ...]) -> None:
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what happens to the task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    load_imports(imports)
    while True:
        try:
            request = json.loads(requests.recv_bytes())
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
        replies.send_bytes(json.dumps(reply).encode())


if __name__ == "__main__":
    read_fd, write_fd, modules = sys.argv[1:4]
    _serve(
        Connection(int(read_fd), writable=False),
        Connection(int(write_fd), readable=False),
        tuple(m for m in modules.split(",") if m),
    )
