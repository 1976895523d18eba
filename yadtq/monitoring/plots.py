"""Monitoring plots drawn on matplotlib ``Figure`` objects, never through pyplot's global state.

The live dashboard redraws from its listener thread and the HTML report draws in a terminal, so
figures are made with ``matplotlib.figure.Figure`` (no GUI backend, no shared current figure) and
turned into PNG bytes; both the widget (``ipywidgets.Image``) and the report embed those bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Mark style per worker event on the timeline: colour and marker, readable without colour too.
MARK_STYLE = {"dead": ("tab:red", "X"), "revived": ("tab:blue", "P"), "stopped": ("black", "s")}


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # fixed margins: a layout engine measures every label on every draw and costs most of a redraw
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.1, right=0.82, bottom=0.22 if height < 3 else 0.15, top=0.85)
    return figure


def png(figure: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (what ``ipywidgets.Image`` and a base64 ``<img>`` take)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def timeline(
    ax: Axes,
    beats: pd.DataFrame,
    spans: pd.DataFrame,
    marks: pd.DataFrame,
    order: list[str],
) -> None:
    """One row per worker: a thin line through its heartbeats (a gap is a silence), busy spans as
    orange bars, and marks where it was declared dead, revived or stopped."""

    from matplotlib.patches import Patch

    rows = {name: i for i, name in enumerate(order)}
    if not rows:
        ax.text(0.5, 0.5, "no heartbeats yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    for name, part in beats.groupby("worker"):
        ax.scatter(part["at"], [rows[name]] * len(part), s=40, c="tab:green", marker="|", linewidths=1)
    for _, span in spans.iterrows():
        width = span["end"] - span["start"]
        ax.barh(rows[span["worker"]], width, left=span["start"], height=0.5, color="tab:orange", alpha=0.85)
    for mark, (colour, marker) in MARK_STYLE.items():
        part = marks[(marks["mark"] == mark) & marks["worker"].isin(rows)]
        if not part.empty:
            ys = [rows[w] for w in part["worker"]]
            ax.scatter(part["at"], ys, s=90, c=colour, marker=marker, zorder=5, label=mark)
    handles, _labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="tab:orange", label="busy"))
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    _time_axis(ax)
    ax.set_title("Workers: heartbeats (ticks), busy (bars), dead / revived / stopped (marks)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small")


def throughput(ax: Axes, frame: pd.DataFrame) -> None:
    """Tasks finished per second (bars, left axis) and latency percentiles (lines, right axis)."""

    if frame.empty:
        ax.text(0.5, 0.5, "no finished tasks yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    ax.plot(frame["at"], frame["per_second"], drawstyle="steps-post", marker=".", color="tab:blue")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("finished / s", color="tab:blue")
    right: Any = ax.twinx()
    for column, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        right.plot(frame["at"], frame[column], style, marker=".", color="tab:red", label=f"latency {column}")
    right.set_ylabel("latency (s)", color="tab:red")
    right.set_ylim(bottom=0)
    right.legend(loc="upper left", frameon=False, fontsize="small")
    _time_axis(ax)
    ax.set_title("Throughput and end-to-end latency")


def _time_axis(ax: Axes) -> None:
    """Local clock times, few ticks: tick labels are most of the cost of drawing a small plot."""
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=7, tz=_local_tz()))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=_local_tz()))


def _local_tz() -> Any:
    from datetime import datetime

    return datetime.now().astimezone().tzinfo
