"""Accounting for a batch of tasks: was anything lost, or finished twice?

The reliability tests, the fault benchmarks and the lab all ask the same question after a run, so
the answer is computed here, from what Redis recorded (statuses, results, histories, attempts), not
from what the caller hopes happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from yadtq.backend import Backend


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
    #: Execution attempts started, over all tasks (more than ``tasks`` means some were retried).
    attempts: int = 0
    #: Tasks that needed more than one attempt.
    retried: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.unfinished == self.duplicates == self.wrong == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = self.problems[:20]
        return out


def audit(backend: Backend, task_ids: Iterable[str], expected: Callable[[str], Any] | None = None) -> Audit:
    """Check every task of a run; ``expected(task_id)`` gives the correct result, if known."""
    report = Audit()
    for task_id in task_ids:
        report.tasks += 1
        record = backend.task(task_id)
        if record is None:
            report.unfinished += 1
            report.problems.append(f"{task_id}: no record")
            continue
        finals = [h for h in backend.history(task_id) if h["status"] in ("success", "failed", "cancelled")]
        report.attempts += record["attempts"]
        report.retried += record["attempts"] > 1
        if len(finals) > 1:
            report.duplicates += 1
            report.problems.append(f"{task_id}: {len(finals)} final transitions")
        status = record["status"]
        if status == "success":
            report.succeeded += 1
            if expected is not None and record["result"] != expected(task_id):
                report.wrong += 1
                report.problems.append(f"{task_id}: result {record['result']!r}, expected {expected(task_id)!r}")
        elif status == "failed":
            report.failed += 1
        else:
            report.unfinished += 1
            report.problems.append(f"{task_id}: still {status}")
    return report
