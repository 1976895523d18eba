"""Accounting for a batch of tasks: was anything lost, run twice, or finished twice?

The reliability tests, the fault benchmarks and the lab all ask the same question after a run, so
the answer is computed here. Two sources, kept apart on purpose:

- what the queue *recorded* in Redis (statuses, results, histories, attempts). These are written by
  the same Lua scripts whose guarantees are under test, so they can show a result stored twice only
  if those scripts let it happen, and can never show a second *execution* whose result they refused;
- an **independent execution count**, kept by the operation itself outside the state machine (a
  plain ``INCR`` per execution, see :mod:`yadtq.lab.probe`). Only this count can prove that nothing
  ran twice, or show the second execution of a task whose worker was wrongly declared dead.

:func:`audit` reports both: ``attempts`` and ``results`` from the queue, ``executions``, ``lost`` and
``duplicated`` from the independent count when one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from yadtq.store.backend import Backend

FINAL = ("success", "failed", "cancelled")


@dataclass
class Audit:
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    #: Tasks with no final state (still queued/processing/retrying, or no record at all).
    unfinished: int = 0
    #: Tasks whose history shows more than one final transition: a result written twice.
    duplicates: int = 0
    #: Tasks whose result is not the expected one (when expectations were given).
    wrong: int = 0
    #: Execution attempts started, as the queue counted them (``attempts`` of each record).
    attempts: int = 0
    #: Tasks that needed more than one attempt.
    retried: int = 0
    #: Final transitions recorded, over all tasks: one per task when nothing was finished twice.
    results: int = 0
    #: Executions counted by the operation itself, outside the state machine (None: no count given).
    executions: int | None = None
    #: Tasks that never completed: unfinished, or ``success`` without a single counted execution
    #: (a result that no execution produced). The queue's promise is ``lost == 0``.
    lost: int = 0
    #: Tasks that the independent count shows executed more than once. The queue admits this only
    #: for a worker wrongly declared dead (paused past the heartbeat timeout) or killed mid-task.
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing finished twice, no wrong result (a second *execution* is reported
        in ``duplicated`` but is not a fault by itself: see docs/reliability.md)."""
        return self.unfinished == self.duplicates == self.wrong == self.lost == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = self.problems[:20]
        return out


def audit(
    backend: Backend,
    task_ids: Iterable[str],
    expected: Callable[[str], Any] | None = None,
    executions: Mapping[str, int] | Callable[[str], int] | None = None,
) -> Audit:
    """Check every task of a run.

    ``expected(task_id)`` gives the correct result, if known. ``executions`` gives each task's
    independent execution count (a mapping or a function of the task id, for example built with
    :func:`execution_counts`); without it only the queue's own records are checked. Read the
    counts once the tasks are final: a count read before a task ran, set against a record read
    after it finished, would look like a result that no execution produced.
    """
    count = executions.__getitem__ if isinstance(executions, Mapping) else executions
    report = Audit(executions=0 if count is not None else None)
    for task_id in task_ids:
        report.tasks += 1
        ran = count(task_id) if count is not None else None
        if ran is not None:
            report.executions = (report.executions or 0) + ran
            if ran > 1:
                report.duplicated += 1
                report.problems.append(f"{task_id}: executed {ran} times")
        record = backend.task(task_id)
        if record is None:
            report.unfinished += 1
            report.lost += 1
            report.problems.append(f"{task_id}: no record")
            continue
        finals = [h for h in backend.history(task_id) if h["status"] in FINAL]
        report.results += len(finals)
        report.attempts += record["attempts"]
        report.retried += record["attempts"] > 1
        if len(finals) > 1:
            report.duplicates += 1
            report.problems.append(f"{task_id}: {len(finals)} final transitions")
        status = record["status"]
        if status == "success":
            report.succeeded += 1
            if ran == 0:
                report.lost += 1
                report.problems.append(f"{task_id}: success, but no execution was counted")
            if expected is not None and record["result"] != expected(task_id):
                report.wrong += 1
                report.problems.append(f"{task_id}: result {record['result']!r}, expected {expected(task_id)!r}")
        elif status == "failed":
            report.failed += 1
        else:
            report.unfinished += 1
            report.lost += 1
            report.problems.append(f"{task_id}: still {status}")
    return report


def execution_counts(backend: Backend, tokens: Mapping[str, str]) -> dict[str, int]:
    """Each task's independent execution count, read from the ``lab.work`` probe's counters.

    ``tokens`` maps task id -> the token its ``lab.work`` call was given. One ``MGET`` for all.
    """
    from yadtq.lab.probe import exec_key  # the probe registers an operation: import it only when asked

    ids = list(tokens)
    keys = [exec_key(backend.config.namespace, tokens[i]) for i in ids]
    values = backend.redis.mget(keys) if keys else []
    return {i: int(v or 0) for i, v in zip(ids, values, strict=True)}
