"""One shape for every run, simulated or measured: a task table and the figures drawn from it.

Because :func:`~yadtq.lab.simulate.simulate` and :func:`~yadtq.lab.run.run` both return a
:class:`Result`, the plots, the sweep and a class's own analysis never need to know which one they
got. Times in the table are seconds from the first scheduled arrival; ``wait`` and ``response``
are measured from the *scheduled* time, so a load generator that falls behind cannot hide queueing
by sending late.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from yadtq.lab.spec import Experiment

COLUMNS = [
    "id",
    "worker",
    "scheduled",
    "submitted",
    "started",
    "finished",
    "wait",
    "service",
    "response",
    "status",
    "attempts",
    "executions",
    "completions",
]


@dataclass
class Result:
    tasks: pd.DataFrame
    summary: dict[str, Any]
    experiment: Experiment | None = None
    #: ``simulation`` or ``run``.
    source: str = "run"
    #: Figures that are not in the task table (generator lateness, audit of a real run, timings).
    extra: dict[str, Any] = field(default_factory=dict)
    #: A real run's heartbeats (worker, at, state, task; seconds from the first arrival).
    beats: pd.DataFrame | None = None
    #: A real run's faults with their detection latency and recovery time (see ``run.detection``).
    faults: pd.DataFrame | None = None
    #: A real run's count of tasks in the system, sampled while it ran (``at``, seconds from the first
    #: arrival; ``arrived``, ``departed``, ``in_system``): the ``L`` of Little's law, measured apart
    #: from the task table (see :func:`littles_law`).
    samples: pd.DataFrame | None = None

    @classmethod
    def build(
        cls,
        tasks: pd.DataFrame,
        experiment: Experiment | None,
        source: str,
        extra: dict[str, Any] | None = None,
        slots: int | None = None,
        samples: pd.DataFrame | None = None,
    ) -> Result:
        """Fill in the derived columns and compute the summary; ``slots`` per worker (default: the
        experiment's) turns a worker's busy time into a utilisation between 0 and 1; ``samples``
        (a real run's counts of tasks in the system, see :attr:`samples`) make Little's law a check."""
        frame = tasks.reindex(columns=COLUMNS).copy()
        frame["wait"] = frame["started"] - frame["scheduled"]
        frame["service"] = frame["finished"] - frame["started"]
        frame["response"] = frame["finished"] - frame["scheduled"]
        extra = dict(extra or {})
        if slots is None:
            slots = experiment.slots if experiment is not None else 1
        summary = summarise(frame, slots, samples)
        summary["source"] = source
        summary.update(extra)
        return cls(frame, summary, experiment, source, extra, samples=samples)

    def save(self, directory: str | Path) -> Path:
        """``tasks.csv``, ``summary.json`` and ``experiment.json`` in ``directory`` (no pickle), and
        for a real run ``beats.csv``, ``faults.csv`` and ``samples.csv``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tasks.to_csv(out / "tasks.csv", index=False)
        for name, table in (("beats", self.beats), ("faults", self.faults), ("samples", self.samples)):
            if table is not None:
                table.to_csv(out / f"{name}.csv", index=False)
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary), indent=2) + "\n")
        if self.experiment is not None:
            self.experiment.save(out / "experiment.json")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Result:
        src = Path(directory)
        tasks = pd.read_csv(src / "tasks.csv", dtype={"id": str, "worker": str})
        summary = json.loads((src / "summary.json").read_text())
        spec = src / "experiment.json"
        experiment = Experiment.load(spec) if spec.exists() else None
        beats, faults, samples = (_table(src / f"{name}.csv") for name in ("beats", "faults", "samples"))
        source = summary.get("source", "run")
        return cls(tasks, summary, experiment, source, beats=beats, faults=faults, samples=samples)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"<Result {self.source}: {s['completed']}/{s['tasks']} tasks, mean response {s['response_mean']:.4g} s, "
            f"throughput {s['throughput']:.4g}/s>"
        )


def summarise(tasks: pd.DataFrame, slots: int = 1, samples: pd.DataFrame | None = None) -> dict[str, Any]:
    """Throughput, wait and response statistics, utilisation per worker (busy slot-time over
    ``slots`` times the span), and Little's law (:func:`littles_law`, a check only with ``samples``)."""
    done = tasks[tasks["finished"].notna()]
    n = len(tasks)
    first = float(tasks["scheduled"].min()) if n else 0.0
    last_arrival = float(tasks["scheduled"].max()) if n else 0.0
    end = float(done["finished"].max()) if len(done) else first
    span = max(end - first, 1e-12)
    out: dict[str, Any] = {
        "tasks": n,
        "completed": len(done),
        "makespan": end - first,
        "throughput": len(done) / span,
    }
    for name in ("wait", "response", "service"):
        values = done[name].to_numpy(dtype=float)
        out[f"{name}_mean"] = float(values.mean()) if len(values) else math.nan
        for q in (50, 95, 99):
            out[f"{name}_p{q}"] = float(np.percentile(values, q)) if len(values) else math.nan
    busy = done.groupby("worker")["service"].sum() / (span * slots)
    out["utilisation"] = {str(k): float(v) for k, v in busy.sort_index().items()}
    out["utilisation_mean"] = float(busy.mean()) if len(busy) else 0.0
    out.update(littles_law(tasks, first, last_arrival, samples))
    return out


def littles_law(
    tasks: pd.DataFrame, start: float, stop: float, samples: pd.DataFrame | None = None
) -> dict[str, float]:
    """Little's law ``L = λ·W`` over the arrival period ``[start, stop]``.

    ``λ`` is the tasks scheduled in the window over its length, ``W`` the mean response time of the
    finished tasks (``finished − scheduled``, from the task table).

    ``mean_in_system`` is the time-average number of tasks in the system computed *from the same
    table* (each task from its scheduled to its finished time). It is a figure, not evidence: both
    it and ``λ·W`` are sums of the same ``finished − scheduled`` intervals, so they agree up to edge
    effects whatever the recorded times are (with every finish time replaced by random noise, they
    still agree within 0.2 %).

    The check needs an ``L`` that does not come from the table: ``samples``, the number of tasks in
    the system counted while the run went on (a real run's ``Result.samples``: the tasks scheduled
    by then minus those whose work had ended, read from the probe's own set in Redis at that moment;
    see :mod:`yadtq.lab.run`). ``sampled_in_system`` is their time average over the window (each
    sample holding until the next), and ``littles_error = |sampled_in_system − λ·W| / λ·W``. Finish
    times recorded wrong, or tasks that never finish, make it large. Without samples (a simulation,
    a replay, whose counts could only be read from the table itself) there is no check:
    ``sampled_in_system`` and ``littles_error`` are NaN.

    Little's law relates means only: a change of the recorded times that keeps the mean response
    time (swapping two tasks' finish times, say) passes it.
    """
    window = stop - start
    nothing = {
        "mean_in_system": math.nan,
        "arrival_rate": math.nan,
        "littles_lambda_w": math.nan,
        "sampled_in_system": math.nan,
        "littles_samples": 0,
        "littles_error": math.nan,
    }
    if window <= 0:
        return nothing
    arrived = tasks["scheduled"].to_numpy(dtype=float)
    left = tasks["finished"].to_numpy(dtype=float)
    left = np.where(np.isnan(left), np.inf, left)  # never finished: in the system to the end
    overlap = np.clip(np.minimum(left, stop) - np.maximum(arrived, start), 0, None)
    rate = len(arrived) / window
    response = tasks["response"].to_numpy(dtype=float)
    w = float(np.nanmean(response)) if np.isfinite(response).any() else math.nan
    lambda_w = rate * w
    sampled, count = _sampled_mean(samples, start, stop)
    return {
        **nothing,
        "mean_in_system": float(overlap.sum() / window),
        "arrival_rate": rate,
        "littles_lambda_w": lambda_w,
        "sampled_in_system": sampled,
        "littles_samples": count,
        "littles_error": abs(sampled - lambda_w) / abs(lambda_w) if lambda_w and count else math.nan,
    }


def _sampled_mean(samples: pd.DataFrame | None, start: float, stop: float) -> tuple[float, int]:
    """The time average over ``[start, stop]`` of a sampled count (each sample holds until the next
    one, the last until ``stop``), and how many samples fell in the window."""
    if samples is None or not len(samples):
        return math.nan, 0
    inside = samples[(samples["at"] >= start) & (samples["at"] <= stop)].sort_values("at")
    if len(inside) < 2:
        return math.nan, len(inside)
    at = inside["at"].to_numpy(dtype=float)
    held = np.diff(np.append(at, stop))
    value = inside["in_system"].to_numpy(dtype=float)
    return float(np.sum(value * held) / np.sum(held)), len(inside)


def _table(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value
