"""A grid of experiments, each predicted, simulated and (optionally) run: one tidy row per point.

The columns put the answers side by side with the same metric names, so the question a class asks
("how far is the formula from what we measured, and why?") is one subtraction: ``measured_*`` (real
run), ``simulated_*`` (SimPy) and ``theory_*`` (the formula), all three for the spec's own dispatch;
and, whatever that is, both models for comparison: ``mmc_*`` (M/M/c, M/D/c for constant tasks, or
M/G/c approximately: one queue for every slot, as shared and pooled dispatch have) and
``partitioned_*`` (an M/G/1 queue per worker, as partitioned dispatch has).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from yadtq.core.config import Config
from yadtq.lab.spec import Experiment, SpecError
from yadtq.lab.theory import predict

METRICS = ("wait_mean", "response_mean", "mean_in_system")


def sweep(
    experiment: Experiment,
    *,
    measure: bool = True,
    config: Config | None = None,
    progress: bool = True,
    **grid: Sequence[Any],
) -> pd.DataFrame:
    """Every combination of ``grid`` (``arrival_rate=[5, 10], workers=[2, 4]``) applied to
    ``experiment``. ``measure=False`` skips the real runs (no services needed)."""
    if not grid:
        raise SpecError("a sweep needs at least one field with a list of values, e.g. arrival_rate=[5, 10].")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SpecError(f"sweep values for {key} must be a non-empty list.")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    specs = [experiment.replace(**point) for point in points]  # every point checked before any run
    rows = []
    for point, spec in zip(points, specs, strict=True):
        rows.append({**point, **_row(spec, measure, config, progress)})
    return pd.DataFrame(rows)


def _row(spec: Experiment, measure: bool, config: Config | None, progress: bool) -> dict[str, Any]:
    from yadtq.lab.simulate import simulate

    row: dict[str, Any] = {"utilisation": spec.busiest_load, "tasks": spec.expected_tasks}
    # its own dispatch, one queue for all slots (shared = pooled), and a queue per worker
    for key, dispatch in (("theory", None), ("mmc", "shared"), ("partitioned", "partitioned")):
        try:
            p = predict(spec, dispatch)
            row.update({f"{key}_wait_mean": p.mean_wait, f"{key}_response_mean": p.mean_response})
            row[f"{key}_mean_in_system"] = p.mean_in_system
        except ValueError:  # not Poisson, or unstable: no formula
            row.update({f"{key}_{m}": math.nan for m in METRICS})
    simulated = simulate(spec).summary
    row.update({f"simulated_{m}": simulated[m] for m in METRICS})
    if measure:
        from yadtq.lab.run import run

        measured = run(spec, config=config, progress=progress).summary
        row.update({f"measured_{m}": measured[m] for m in METRICS})
        # L counted while the run went on, against λ·W from the tasks' records: Little's law as a check
        row["measured_sampled_in_system"] = measured["sampled_in_system"]
        row["measured_littles_error"] = measured["littles_error"]
        row["measured_lateness_max"] = measured["lateness_max"]
        row["measured_service_mean"] = measured["service_mean"]
        for name in ("lost", "duplicated", "restarted", "executed_more_than_once", "completed_once"):
            row[name] = measured[f"audit_{name}"]
        for key in ("simulated", "theory", "mmc", "partitioned"):
            row[f"{key}_error"] = row[f"{key}_response_mean"] / row["measured_response_mean"] - 1
    return row
