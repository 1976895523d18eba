"""``yadtq report``: one self-contained HTML file (plots as base64 PNG) for after the fact.

It is what a person mails to a colleague or attaches to a lab write-up, so it has no external
files, scripts or styles to lose: tasks by status and operation, the latency distribution,
throughput over time, the worker timeline, the failure history and the dead letters.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

from yadtq.monitoring import plots
from yadtq.monitoring.monitor import (
    STATUSES,
    _natural,
    busy_spans,
    failures,
    latencies,
    throughput,
    worker_marks,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from yadtq.client.client import Client

#: Most tasks one report reads (newest first).
REPORT_TASKS = 100_000
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:.85em}"
    "td,th{border:1px solid #ccc;padding:2px 6px}h2{margin-top:1.5em}"
)


def build(client: Client, since: float | None = None) -> str:
    """The report as an HTML string, on the tasks submitted since ``since`` (Unix time; None: all)."""
    import pandas as pd

    tasks = client.tasks(limit=REPORT_TASKS)
    beats = client.heartbeats()
    if since is not None:
        start = pd.Timestamp(since, unit="s", tz="UTC")
        tasks = tasks[tasks["submitted_at"] >= start]
        beats = beats[beats["at"] >= start]
    workers = client.workers()
    parts = [
        f"<h1>yadtq report: {html.escape(client.config.namespace)}</h1>",
        f"<p>Made {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {len(tasks)} tasks"
        + (f" submitted since {start:%Y-%m-%d %H:%M:%S} UTC" if since is not None else "")
        + f", {len(workers)} workers.</p>",
        "<h2>Tasks by status and operation</h2>",
        _img(_by_status_and_op(tasks)),
        _html_table(_status_table(tasks)),
        "<h2>Latency (submit to finish)</h2>",
        _img(_latency_histogram(tasks)),
        _html_table(_latency_summary(tasks)),
        "<h2>Throughput over time</h2>",
        _img(_throughput(tasks)),
        "<h2>Worker timeline</h2>",
        _img(_timeline(client, beats)),
        "<h2>Failures: workers declared dead</h2>",
        _html_table(failures(client)),
        "<h2>Dead letters</h2>",
        _html_table(client.dead_letters(limit=200)),
    ]
    head = f"<meta charset='utf-8'><title>yadtq report</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>"


def write(client: Client, path: Path, since: float | None = None) -> Path:
    path.write_text(build(client, since), encoding="utf-8")
    return path


def _img(figure: Figure) -> str:
    data = base64.b64encode(plots.png(figure, dpi=90)).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>(none)</p>"
    return frame.to_html(index=False, na_rep="", border=0)


def _status_table(tasks: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    if tasks.empty:
        return pd.DataFrame()
    table = tasks.groupby(["op", "status"]).size().unstack(fill_value=0)
    order = [s for s in STATUSES if s in table.columns]
    return table[order].reset_index()


def _by_status_and_op(tasks: pd.DataFrame) -> Figure:
    figure = plots.new_figure(10, 3)
    ax = figure.add_subplot()
    table = _status_table(tasks)
    if table.empty:
        ax.text(0.5, 0.5, "no tasks", ha="center", va="center", transform=ax.transAxes)
        return figure
    colours = {"success": "tab:green", "failed": "tab:red", "cancelled": "tab:gray", "queued": "tab:blue"}
    table.set_index("op").plot.bar(
        ax=ax, stacked=True, rot=0, color=[colours.get(c, "tab:orange") for c in table.columns[1:]]
    )
    ax.set_ylabel("tasks")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return figure


def _latency_histogram(tasks: pd.DataFrame) -> Figure:
    figure = plots.new_figure(10, 3)
    ax = figure.add_subplot()
    done = latencies(tasks)
    if done.empty:
        ax.text(0.5, 0.5, "no finished tasks", ha="center", va="center", transform=ax.transAxes)
        return figure
    ax.hist(done["latency"], bins=min(50, max(5, len(done) // 5)), color="tab:blue")
    ax.set_xlabel("seconds from submit to finish")
    ax.set_ylabel("tasks")
    return figure


def _latency_summary(tasks: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    done = latencies(tasks)["latency"]
    if done.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        [{"tasks": len(done), **{f"p{p}": round(done.quantile(p / 100), 4) for p in (50, 90, 99)}, "max": done.max()}]
    )


def _throughput(tasks: pd.DataFrame) -> Figure:
    figure = plots.new_figure(10, 3)
    frame = throughput(tasks, every=_bin(tasks))
    plots.throughput(figure.add_subplot(), frame)
    return figure


def _bin(tasks: pd.DataFrame) -> str:
    """A bin width giving about a hundred bins over the run (at least a second)."""
    done = tasks["finished_at"].dropna()
    span = (done.max() - done.min()).total_seconds() if len(done) > 1 else 1.0
    return f"{max(1, round(span / 100))}s"


def _timeline(client: Client, beats: pd.DataFrame) -> Figure:
    order = sorted(set(beats["worker"]), key=_natural)
    figure = plots.new_figure(10, 1.2 + 0.4 * max(len(order), 1))
    import pandas as pd

    marks = worker_marks(pd.DataFrame(client.backend.workers(), columns=["name", "dead_at", "stopped_at"]))
    plots.timeline(
        figure.add_subplot(),
        beats,
        busy_spans(beats, client.config.heartbeat_interval),
        marks[marks["worker"].isin(order)],
        order,
    )
    return figure
