"""Worker processes, started and stopped from Python: the one owner of ``Popen`` for workers.

The CLI demo, the notebooks, the lab and the tests all start workers here, each as
``python -m yadtq worker`` in its own process (never a fork of a Jupyter kernel), configured
through ``YADTQ_*`` variables. Every process started is stopped and reaped by :meth:`Pool.close`,
which also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from yadtq.core.config import Config


@dataclass
class WorkerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.time)
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class Pool:
    def __init__(self, config: Config | None = None, log_dir: Path | None = None) -> None:
        self.config = config or Config.from_env()
        self.log_dir = Path(log_dir or Path(self.config.home) / "logs" / "workers")
        self.processes: dict[str, WorkerProcess] = {}
        self._counter = 0
        atexit.register(self.close)

    def start(self, n: int = 1, prefix: str = "worker", extra_env: dict[str, str] | None = None) -> list[WorkerProcess]:
        """Start ``n`` workers named ``prefix-1``, ``prefix-2``, ... (names are never reused)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.config.to_env(), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        started = []
        for _ in range(n):
            self._counter += 1
            name = f"{prefix}-{self._counter}"
            while name in self.processes:
                self._counter += 1
                name = f"{prefix}-{self._counter}"
            log_path = self.log_dir / f"{self.config.namespace}-{name}.log"
            log = log_path.open("ab")
            popen = subprocess.Popen(
                [sys.executable, "-m", "yadtq", "worker", "--name", name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.processes[name] = WorkerProcess(name, popen, log_path, _log=log)
            started.append(self.processes[name])
        return started

    def signal(self, name: str, sig: int) -> None:
        """Send a signal to one worker: SIGKILL (crash), SIGSTOP/SIGCONT (pause), SIGTERM (stop)."""
        proc = self.processes[name]
        if proc.alive:
            os.kill(proc.pid, sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self._reap(name, timeout=5)

    def stop(self, name: str, timeout: float | None = None) -> int | None:
        """SIGTERM, wait for a clean exit (task finished or handed back), then SIGKILL."""
        proc = self.processes[name]
        if proc.alive:
            proc.popen.send_signal(signal.SIGCONT)  # a paused worker cannot handle SIGTERM
            proc.popen.terminate()
        wait = timeout if timeout is not None else self.config.shutdown_grace + 15
        return self._reap(name, wait)

    def alive(self) -> list[str]:
        return [name for name, proc in self.processes.items() if proc.alive]

    def close(self) -> None:
        """Stop every worker this pool started (they stop in parallel) and reap them."""
        live = self.alive()
        for name in live:
            self.processes[name].popen.send_signal(signal.SIGCONT)
            self.processes[name].popen.terminate()
        for name in list(self.processes):
            self._reap(name, self.config.shutdown_grace + 15)
        self.processes.clear()

    def _reap(self, name: str, timeout: float) -> int | None:
        proc = self.processes[name]
        try:
            code = proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            code = proc.popen.wait(timeout=10)
        if proc._log is not None and not proc._log.closed:
            proc._log.close()
        return code

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
