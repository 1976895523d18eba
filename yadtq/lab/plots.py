"""The lab's pictures (matplotlib): each function draws on an ``ax`` (made if not given) and returns it,
so a notebook can arrange them and a test can look at what was drawn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from yadtq.lab.result import Result
    from yadtq.lab.theory import Prediction

#: Sweep columns drawn by :func:`sweep_plot`, with their labels, in drawing order. ``theory`` (the
#: formula of the spec's own dispatch) is a wide pale band under the formula line it equals.
SERIES = [
    ("theory", "theory, the spec's own dispatch", "-", "tab:orange"),
    ("measured", "measured (real workers)", "o-", "black"),
    ("simulated", "simulation (SimPy)", "s--", "tab:blue"),
    ("mmc", "theory, shared or pooled (M/M/c)", ":", "tab:green"),
    ("partitioned", "theory, partitioned (M/G/1 per worker)", "-.", "tab:red"),
]
#: How the band of the spec's own formula is drawn.
BAND = {"lw": 6, "alpha": 0.3}


def _axes(ax: Axes | None, size: tuple[float, float] = (7, 4)) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)[1]


def sweep_plot(frame: pd.DataFrame, x: str = "utilisation", metric: str = "response_mean") -> tuple[Axes, Axes]:
    """Measured vs simulation vs the formulas over a sweep (top): the spec's own (a pale band) and
    both models, one queue (M/M/c: shared, pooled) and a queue per worker (partitioned); and the
    relative error of each against the measurement (bottom; against the simulation when nothing
    was measured)."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    data = frame.sort_values(x)
    reference = "measured" if f"measured_{metric}" in data and data[f"measured_{metric}"].notna().any() else "simulated"
    for key, label, style, color in SERIES:
        column = f"{key}_{metric}"
        if column not in data or data[column].isna().all():
            continue
        width = BAND if key == "theory" else {}
        top.plot(data[x], data[column], style, color=color, label=label, **width)
        if key != reference:
            error = (data[column] - data[f"{reference}_{metric}"]) / data[f"{reference}_{metric}"]
            bottom.plot(data[x], 100 * error, style, color=color, label=label, **width)
    top.set_ylabel(f"{metric.replace('_', ' ')} (s)")
    top.legend(fontsize="small")
    top.set_title(f"{metric.replace('_', ' ')} against {x}")
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_ylabel(f"error vs {reference} (%)")
    bottom.set_xlabel(x)
    fig.tight_layout()
    return top, bottom


def gantt(result: Result, ax: Axes | None = None, limit: int | None = 200) -> Axes:
    """One row per worker: a thin light bar while a task waited (scheduled to started, on the row of
    the worker that ran it) and a solid bar while it ran. The first ``limit`` tasks only, so a long
    run stays readable."""
    ax = _axes(ax, (9, 0.6 * result.tasks["worker"].nunique() + 1.5))
    tasks = result.tasks.dropna(subset=["started", "finished"]).sort_values("scheduled")
    if limit is not None:
        tasks = tasks.head(limit)
    workers = sorted(tasks["worker"].unique(), key=_natural)
    for row, worker in enumerate(workers):
        mine = tasks[tasks["worker"] == worker]
        waits = mine[mine["wait"] > 0]
        ax.barh(row + 0.3, waits["wait"], left=waits["scheduled"], height=0.15, color="tab:orange", alpha=0.6)
        ax.barh(row, mine["service"], left=mine["started"], height=0.5, color="tab:blue", edgecolor="white", lw=0.3)
    ax.set_yticks(range(len(workers)), workers)
    ax.set_xlabel("seconds since the first arrival")
    ax.set_title("who ran what: service (blue) and the wait before it (orange)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="service"), Patch(color="tab:orange", label="wait")], loc="best")
    return ax


def response_distribution(result: Result, ax: Axes | None = None, predictions: Sequence[Prediction] = ()) -> Axes:
    """Histogram of response times, with the measured mean and each prediction's mean."""
    ax = _axes(ax)
    response = result.tasks["response"].dropna().to_numpy(dtype=float)
    ax.hist(response, bins=min(60, max(10, len(response) // 20)), density=True, color="tab:blue", alpha=0.6)
    ax.axvline(float(np.mean(response)), color="tab:blue", label=f"mean {np.mean(response):.3f} s ({result.source})")
    for prediction, style in zip(predictions, ("--", ":", "-."), strict=False):
        ax.axvline(
            prediction.mean_response,
            color="black",
            ls=style,
            label=f"{prediction.model}, mean {prediction.mean_response:.3f} s",
        )
    ax.set_xlabel("response time: scheduled to finished (s)")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax


def _natural(name: str) -> tuple[str, int]:
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


#: Colours of the audit's outcomes: what went right, and the two ways a delivery guarantee fails.
AUDIT_STYLE = {
    "completed exactly once": "tab:green",
    "restarted after a crash": "tab:olive",
    "completed more than once": "tab:orange",
    "lost": "tab:red",
}


def audit_bars(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Grouped bars of an audit table (one row per run, see ``run.audit_table``): how many tasks
    were lost, completed more than once, restarted, and completed exactly once, run by run."""
    ax = _axes(ax, (8, 3.8))
    columns = [c for c in AUDIT_STYLE if c in table.columns]
    width = 0.8 / len(columns)
    x = np.arange(len(table))
    for i, column in enumerate(columns):
        values = table[column].to_numpy(dtype=float)
        bars = ax.bar(x + (i - (len(columns) - 1) / 2) * width, values, width, label=column, color=AUDIT_STYLE[column])
        ax.bar_label(bars, fmt="%d", fontsize="small")
    ax.set_xticks(x, [str(label).replace("_", " ") for label in table.index])
    ax.set_ylabel("tasks")
    ax.set_title("One crash, three delivery semantics (counted by the tasks themselves)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax


#: Heartbeat markers by worker state, and fault marks by action.
BEAT_STYLE = {"idle": "tab:green", "busy": "tab:blue", "stopping": "tab:purple", "stopped": "black"}
FAULT_STYLE = {"kill": "red", "term": "purple", "pause": "orange", "resume": "green", "start": "grey"}


def fault_timeline(result: Result, ax: Axes | None = None) -> Axes:
    """One row per worker: its heartbeats (dots, coloured by state), the tasks it ran to the end
    (thin bars), each fault (a vertical line) and the moment it was declared dead (a red cross).
    A gap in the dots is a worker that could not heartbeat: killed, or paused."""
    beats = result.beats if result.beats is not None else pd.DataFrame(columns=["worker", "at", "state"])
    faults = result.faults if result.faults is not None else pd.DataFrame(columns=["at", "action", "worker"])
    workers = sorted(set(beats["worker"]) | set(faults["worker"]), key=_natural)
    ax = _axes(ax, (11, 1.2 + 0.7 * max(1, len(workers))))
    row = {name: i for i, name in enumerate(workers)}
    for name in workers:
        own = beats[beats["worker"] == name]
        colours = [BEAT_STYLE.get(state, "grey") for state in own["state"]]
        ax.scatter(own["at"], [row[name]] * len(own), c=colours, s=14, zorder=3)
        done = result.tasks[(result.tasks["worker"] == name) & result.tasks["finished"].notna()]
        ax.hlines([row[name] + 0.22] * len(done), done["started"], done["finished"], color="tab:blue", lw=3, alpha=0.5)
    for fault in faults.itertuples():
        colour = FAULT_STYLE.get(fault.action, "grey")
        if fault.worker in row:
            y = row[fault.worker]
            ax.vlines(fault.at, y - 0.4, y + 0.4, color=colour, lw=2)
            ax.annotate(fault.action, (fault.at, y - 0.42), color=colour, fontsize="small", ha="center", va="bottom")
            detected = getattr(fault, "detected", float("nan"))
            if detected == detected:  # not NaN: declared dead, or (SIGTERM) said it stopped
                marker, colour = ("s", "black") if fault.action == "term" else ("x", "red")
                ax.plot(fault.at + detected, y, marker, color=colour, ms=8, mew=2, zorder=4, mfc="none")
    for state, colour in BEAT_STYLE.items():
        ax.scatter([], [], c=colour, s=14, label=f"heartbeat: {state}")
    ax.plot([], [], "x", color="red", mew=2, label="declared dead")
    ax.plot([], [], "s", color="black", mfc="none", mew=2, label="recorded itself stopped")
    ax.plot([], [], color="tab:blue", lw=3, alpha=0.5, label="task ran to the end")
    ax.set_yticks(range(len(workers)), workers)
    ax.set_ylim(len(workers) - 0.4, -0.6)
    ax.set_xlabel("seconds from the first arrival")
    ax.set_title("Heartbeats, faults and their detection")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return ax
