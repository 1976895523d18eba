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

    @classmethod
    def build(
        cls,
        tasks: pd.DataFrame,
        experiment: Experiment | None,
        source: str,
        extra: dict[str, Any] | None = None,
        slots: int | None = None,
    ) -> Result:
        """Fill in the derived columns and compute the summary; ``slots`` per worker (default: the
        experiment's) turns a worker's busy time into a utilisation between 0 and 1."""
        frame = tasks.reindex(columns=COLUMNS).copy()
        frame["wait"] = frame["started"] - frame["scheduled"]
        frame["service"] = frame["finished"] - frame["started"]
        frame["response"] = frame["finished"] - frame["scheduled"]
        extra = dict(extra or {})
        if slots is None:
            slots = experiment.slots if experiment is not None else 1
        summary = summarise(frame, slots)
        summary["source"] = source
        summary.update(extra)
        return cls(frame, summary, experiment, source, extra)

    def save(self, directory: str | Path) -> Path:
        """``tasks.csv``, ``summary.json`` and ``experiment.json`` in ``directory`` (no pickle), and
        for a real run ``beats.csv`` and ``faults.csv``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tasks.to_csv(out / "tasks.csv", index=False)
        for name, table in (("beats", self.beats), ("faults", self.faults)):
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
        beats, faults = (_table(src / f"{name}.csv") for name in ("beats", "faults"))
        return cls(tasks, summary, experiment, summary.get("source", "run"), beats=beats, faults=faults)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"<Result {self.source}: {s['completed']}/{s['tasks']} tasks, mean response {s['response_mean']:.4g} s, "
            f"throughput {s['throughput']:.4g}/s>"
        )


def summarise(tasks: pd.DataFrame, slots: int = 1) -> dict[str, Any]:
    """Throughput, wait and response statistics, utilisation per worker (busy slot-time over
    ``slots`` times the span), and Little's law.

    Little's law is checked over the arrival period ``[first, last scheduled]``: ``L`` is the
    time-average number of tasks in the system over that window (from each task's overlap with it),
    ``λ`` the arrival rate in it and ``W`` the mean response time. They agree only if the recorded
    times are consistent and the window is long compared with a response time, so the relative error
    is a real check on a run, not an identity.
    """
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
    out.update(littles_law(tasks, first, last_arrival))
    return out


def littles_law(tasks: pd.DataFrame, start: float, stop: float) -> dict[str, float]:
    window = stop - start
    if window <= 0:
        return {
            "mean_in_system": math.nan,
            "arrival_rate": math.nan,
            "littles_lambda_w": math.nan,
            "littles_error": math.nan,
        }
    arrived = tasks["scheduled"].to_numpy(dtype=float)
    left = tasks["finished"].to_numpy(dtype=float)
    left = np.where(np.isnan(left), np.inf, left)  # never finished: in the system to the end
    overlap = np.clip(np.minimum(left, stop) - np.maximum(arrived, start), 0, None)
    in_system = float(overlap.sum() / window)
    rate = len(arrived) / window
    response = tasks["response"].to_numpy(dtype=float)
    w = float(np.nanmean(response)) if np.isfinite(response).any() else math.nan
    lambda_w = rate * w
    return {
        "mean_in_system": in_system,
        "arrival_rate": rate,
        "littles_lambda_w": lambda_w,
        "littles_error": abs(in_system - lambda_w) / lambda_w if lambda_w else math.nan,
    }


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
