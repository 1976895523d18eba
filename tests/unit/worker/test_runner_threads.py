"""The consumer thread reads the runner's state while the runner thread changes it.

A worker died of ``RuntimeError: dictionary changed size during iteration`` in a benchmark with
eight busy workers: the consumer thread (then in ``busy_since``, now ``able``) walked the running tasks while the runner
thread finished one. The readers must work on a snapshot.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from yadtq.core.config import Config
from yadtq.core.task import TaskMessage
from yadtq.worker.runner import Run, Runner


def test_able_survives_tasks_finishing_and_starting_meanwhile(tmp_path) -> None:
    config = Config.from_env(env={}, home=tmp_path, concurrency=64)
    runner = Runner(SimpleNamespace(config=config))  # type: ignore[arg-type]
    runs = [Run(slot, TaskMessage(op="add", args=[i, i]), 1, [], 0.0) for i, slot in enumerate(runner.slots)]
    runner.running.update({run.msg.id: run for run in runs})
    errors: list[BaseException] = []
    stop = time.monotonic() + 1.0

    def churn() -> None:  # what the runner thread does: a task finishes, the next one starts
        while time.monotonic() < stop:
            for run in runs:
                del runner.running[run.msg.id]
                runner.running[run.msg.id] = run

    def read() -> None:  # what the consumer thread does, at every pass of its loop
        try:
            while time.monotonic() < stop:
                runner.able(0.5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    runner.close()
    assert errors == []
