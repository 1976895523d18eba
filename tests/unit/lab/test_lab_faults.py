"""The fault schedule of a real run, carried out on a stand-in pool: the right call at the right time."""

from __future__ import annotations

import signal
import threading
import time

from yadtq.core.config import Config
from yadtq.lab.run import _faults
from yadtq.lab.spec import Fault


class FakePool:
    def __init__(self) -> None:
        self.processes = {"worker-1": None, "worker-2": None}
        self.config = Config.from_env()
        self.calls: list[tuple[float, str, str]] = []
        self.t0 = 0.0

    def _note(self, what: str, name: str) -> None:
        self.calls.append((time.time() - self.t0, what, name))

    def kill(self, name: str) -> None:
        self._note("kill", name)

    def stop(self, name: str, timeout: float | None = None) -> None:
        self._note("term", name)
        time.sleep(0.3)  # a graceful stop waits for the worker's task

    def signal(self, name: str, sig: int) -> None:
        self._note({signal.SIGSTOP: "SIGSTOP", signal.SIGCONT: "SIGCONT"}[sig], name)


def test_faults_happen_on_time_and_pause_for_resumes_and_term_does_not_hold_up_the_rest() -> None:
    pool = FakePool()
    faults = (
        Fault(at=0.3, action="kill", worker=1),
        Fault(at=0.1, action="pause_for", worker=0, seconds=0.4),
        Fault(at=0.2, action="term", worker=1),
    )
    pool.t0 = time.time()
    log: list[dict[str, object]] = []
    _faults(pool, faults, pool.t0, threading.Event(), log)  # type: ignore[arg-type]
    expected = [(0.1, "SIGSTOP", "worker-1"), (0.2, "term", "worker-2"), (0.3, "kill", "worker-2")]
    expected.append((0.5, "SIGCONT", "worker-1"))
    assert [call[1:] for call in pool.calls] == [e[1:] for e in expected]
    for (at, *_), (due, *_) in zip(pool.calls, expected, strict=True):
        assert due - 0.01 <= at < due + 0.15  # the kill would come at 0.5 if the term held it up
    assert [entry["action"] for entry in log] == ["pause", "term", "kill", "resume"]


def test_a_stopped_run_skips_the_remaining_faults() -> None:
    pool = FakePool()
    stop = threading.Event()
    stop.set()
    _faults(pool, (Fault(at=0.2, action="kill"),), time.time(), stop, [])  # type: ignore[arg-type]
    assert pool.calls == []
