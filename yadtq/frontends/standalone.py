"""``yadtq dashboard``: the notebook dashboard as a web page, served by Voila on 127.0.0.1.

Voila runs a notebook in a fresh kernel for each page load and shows only its widgets, so a person
who never opens Jupyter gets the same live dashboard. The notebook is written here, next to nothing
else, with this namespace and working directory baked in (workers started from the page import the
operations named in ``YADTQ_IMPORTS`` from there). Loopback only: the page can start and kill
processes on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from yadtq.core.config import Config
from yadtq.core.errors import ConfigError, ServiceUnavailable

#: Seconds Voila gives each cell of the page's notebook (a finite one avoids a known nbclient hang).
CELL_TIMEOUT = 60
#: Seconds to wait for Voila to accept connections.
START_TIMEOUT = 60


def notebook(config: Config, cwd: Path) -> dict[str, object]:
    """The page's notebook: a client and pool for ``config``'s namespace, and the live dashboard."""
    code = f"""import os
os.chdir({str(cwd)!r})
from yadtq import Client, Pool
from yadtq.frontends.dashboard import dashboard

client = Client(namespace={config.namespace!r})
pool = Pool(client.config)
dash = dashboard(client, pool)
dash.widget"""
    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": f"# yadtq dashboard: `{config.namespace}`"},
            {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A Voila process serving the dashboard; :meth:`close` stops and reaps it."""

    def __init__(self, config: Config, port: int | None = None, cwd: Path | None = None) -> None:
        try:
            import voila  # noqa: F401  (only to say what is missing before starting a process)
        except ImportError:
            raise ConfigError("the dashboard page needs Voila: pip install voila") from None
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._dir = tempfile.TemporaryDirectory(prefix="yadtq-dashboard-")
        path = Path(self._dir.name) / "dashboard.ipynb"
        path.write_text(json.dumps(notebook(config, Path(cwd or os.getcwd()))))
        self.log_path = Path(self._dir.name) / "voila.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voila",
                str(path),
                "--no-browser",
                "--Voila.ip=127.0.0.1",
                f"--port={self.port}",
                f"--VoilaExecutor.timeout={CELL_TIMEOUT}",
            ],
            env={**os.environ, **config.to_env()},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until Voila accepts connections (a single-notebook Voila has no status API)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceUnavailable(f"voila exited with code {self.process.returncode}: {self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise ServiceUnavailable(f"voila did not answer on port {self.port} within {timeout:g}s")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # Voila stops its kernels, whose pools stop their workers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self._dir.cleanup()

    def _tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-400:].strip().replace("\n", " | ")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(config: Config, port: int | None = None, duration: float | None = None) -> None:
    """Serve until Ctrl-C, SIGTERM (or ``duration`` seconds), printing the URL once it answers.
    Voila runs in a session of its own, so this process must stop it on every way out."""
    signal.signal(signal.SIGTERM, _exit_on_term)
    with Server(config, port) as server:
        server.wait_ready()
        print(f"dashboard at {server.url} (Ctrl-C to stop)", flush=True)
        deadline = None if duration is None else time.monotonic() + duration
        while (deadline is None or time.monotonic() < deadline) and server.process.poll() is None:
            time.sleep(0.2)


def _exit_on_term(_signum: int, _frame: object) -> None:
    """SIGTERM as a normal exit, so the ``with Server`` block stops Voila (and its kernels' workers)."""
    raise SystemExit(0)
