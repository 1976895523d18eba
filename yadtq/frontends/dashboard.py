"""The notebook dashboard: start and stop workers, submit tasks, watch the queue; and the heartbeat plot.

Everything here is a thin layer over :class:`~yadtq.client.client.Client` and :class:`~yadtq.processes.pool.Pool`, so
what a student clicks is exactly what the notebook cells above it do in code. The frames the widgets
and the plot show are built by plain functions (:func:`task_view`, :func:`worker_view`,
:func:`timeline_frame`) that can be tested and reused without a screen. ipywidgets and matplotlib
are imported inside the functions that need them, so ``import yadtq`` stays light for workers.

A mistake typed into the form (bad JSON, an unknown operation, arguments over a limit) is shown as
one line in the message label, never as a traceback: the dashboard is for people learning the queue.
Once the notebook cleans up its namespace it closes the dashboard first (:meth:`Dashboard.close`):
a click on a stale dashboard must not start workers or create the deleted topics again.
"""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from yadtq.core.errors import YadtqError
from yadtq.core.ops import registry
from yadtq.monitoring.monitor import (
    STATUSES,
    busy_spans,
    counters,
    counts_as_text,
    failures,
    filter_tasks,
    partitions,
    share_group,
    share_group_title,
    shared_dispatch,
    throughput,
    worker_marks,
)

if TYPE_CHECKING:
    import ipywidgets
    import pandas as pd
    from matplotlib.axes import Axes

    from yadtq.client.client import Client, TaskHandle
    from yadtq.monitoring.live import Listener
    from yadtq.processes.pool import Pool

#: Columns of the task and worker tables worth a glance; the full frames are on the client.
TASK_VIEW = ["id", "op", "args", "status", "result", "error", "worker", "attempts", "submitted_at"]
WORKER_VIEW = ["name", "pid", "state", "current_task", "processed", "failed", "partitions", "last_heartbeat"]
#: Colour, marker and size per state in the heartbeat timeline, drawn in this order (last on top).
#: Shapes differ too, so the plot reads without colour: a tick when idle, a block when busy.
STATE_STYLE = {
    "idle": ("tab:green", "|", 110),
    "busy": ("tab:orange", "s", 45),
    "stopping": ("silver", "o", 45),
    "stopped": ("tab:gray", "X", 90),
}
OTHER_STYLE = ("tab:blue", "o", 45)  # starting, or a state added later
#: More workers than this from one click is almost surely a typo (and each one is a process).
MAX_START = 16
#: Tasks the counters and the table read per redraw (newest first), and rows the table shows.
TABLE_TASKS = 500
SHOWN_TASKS = 50
#: Seconds of history the live plots show: at most the first, at least the second.
TIMELINE_SECONDS = 120
MIN_WINDOW_SECONDS = 30
#: Width of the plots in pixels (10 inches at plots.png's 80 dpi).
PLOT_PIXELS = 800
#: Seconds between two reads of the partition or share-group table (a few Kafka requests, each with a
#: deadline).
PARTITIONS_EVERY = 2.0
#: Title of the section showing how the task topic is read: by the share group (shared dispatch),
#: or partition by partition by the consumer group (partitioned dispatch).
GROUP_TITLES = {True: "Share group", False: "Partitions of the task topic"}
#: The per-worker controls: the faults a demonstration needs.
WORKER_ACTIONS = {
    "stop": "SIGTERM: finish or hand back the task, then leave",
    "kill": "SIGKILL: die at once; others requeue its task",
    "pause": "SIGSTOP: freeze (no heartbeats) until resumed",
    "resume": "SIGCONT: carry on after a pause",
}
#: What every button says once the dashboard is closed.
CLOSED = "this dashboard is closed (its namespace was cleaned up); make a new client and dashboard to go on"


# --- logic: frames and parsing -------------------------------------------------------------------
def parse_args(text: str) -> list[Any]:
    """The form's argument text as a list; ValueError with a message a student can act on."""
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"arguments are not valid JSON ({exc.msg} at column {exc.colno}); type a list like [2, 3]"
        ) from None
    if not isinstance(value, list):
        raise ValueError(f"arguments must be a JSON list like [2, 3], got {text.strip()!r:.40}")
    return value


def task_view(client: Client, limit: int = 20) -> pd.DataFrame:
    """The newest tasks with the columns the dashboard shows (full ids: they go into ``client.handle``)."""
    return _local_seconds(client.tasks(limit=limit)[TASK_VIEW], "submitted_at")


def worker_view(client: Client) -> pd.DataFrame:
    """Every worker seen in the namespace with the columns the dashboard shows."""
    return _local_seconds(client.workers()[WORKER_VIEW], "last_heartbeat")


def timeline_frame(client: Client) -> pd.DataFrame:
    """Heartbeats (worker, at, state, task) plus ``row``, the worker's row in the plot. Rows follow the
    names in natural order (worker-2 before worker-10): start times of workers started together race."""
    beats = client.heartbeats()
    order = sorted(set(beats["worker"]), key=_natural)
    beats["row"] = beats["worker"].map({name: i for i, name in enumerate(order)}).astype(int)
    return beats


def _local_seconds(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Times in the reader's time zone, to the second: nanoseconds in UTC are noise on a dashboard."""
    return frame.assign(**{column: frame[column].dt.tz_convert(_local_tz()).dt.floor("s")})


def _local_tz() -> Any:
    return datetime.now().astimezone().tzinfo


def _natural(name: str) -> list[Any]:
    """Sort key comparing digit runs as numbers, so worker-10 comes after worker-9."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


# --- drawing -------------------------------------------------------------------------------------
def heartbeat_timeline(client: Client, ax: Axes | None = None) -> Axes:
    """Draw one row per worker with a marker per heartbeat, coloured by state: the picture of who
    was idle, who was busy, and when a worker stopped (or went silent: the markers just end)."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    beats = timeline_frame(client)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 1.4 + 0.45 * beats["row"].nunique()))
    if beats.empty:
        ax.text(0.5, 0.5, "no heartbeats yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return ax
    for state in [*sorted(set(beats["state"]) - set(STATE_STYLE)), *STATE_STYLE]:
        part = beats[beats["state"] == state]
        if not part.empty:
            colour, marker, size = STATE_STYLE.get(state, OTHER_STYLE)
            ax.scatter(part["at"], part["row"], c=colour, s=size, marker=marker, linewidths=2, label=state)
    names = beats.drop_duplicates("row").sort_values("row")["worker"]
    ax.set_yticks(range(len(names)), list(names))
    ax.set_ylim(len(names) - 0.5, -0.5)  # first worker on top
    ax.grid(axis="x", alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=_local_tz()))
    ax.set_xlabel("time (local)")
    ax.set_title("Worker heartbeats")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="state")
    return ax


# --- the widget ----------------------------------------------------------------------------------
class Dashboard:
    """The widgets, as attributes so tests (and curious students) can click and read them.

    It follows the queue live: a :class:`~yadtq.monitoring.live.Listener` on the events channel redraws it at
    most every ``dashboard_interval`` seconds (``live=False`` leaves only the Refresh button)."""

    def __init__(self, client: Client, pool: Pool, live: bool = True) -> None:
        import threading

        import ipywidgets as w

        self.client, self.pool = client, pool
        self.count = w.IntText(value=3, description="Workers:", layout=w.Layout(width="160px"))
        self.start_button = w.Button(description="Start Workers", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop a worker", icon="stop", tooltip="stops the newest live worker")
        self.worker_pick = w.Dropdown(options=[], description="Worker:", layout=w.Layout(width="220px"))
        self.control_buttons = {
            action: w.Button(description=action.capitalize(), tooltip=tip, layout=w.Layout(width="90px"))
            for action, tip in WORKER_ACTIONS.items()
        }
        names = [op.name for op in registry]
        self.op = w.Dropdown(options=names, value="add" if "add" in names else names[0], description="Operation:")
        self.args = w.Text(value="[2, 3]", description="Arguments:", placeholder="a JSON list, e.g. [2, 3]")
        self.usage = w.Label()
        self.submit_button = w.Button(description="Submit Task", icon="paper-plane", button_style="primary")
        self.message = w.Label(layout=w.Layout(width="100%"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.live_label = w.Label()
        self.counters = w.HTML()
        self.status_filter = w.Dropdown(options=[("any", ""), *[(s, s) for s in STATUSES]], description="Status:")
        self.op_filter = w.Dropdown(options=[("any", ""), *[(n, n) for n in names]], description="Operation:")
        self.worker_filter = w.Dropdown(options=[("any", "")], description="Worker:")
        self.tasks_out = w.Output(layout=w.Layout(max_height="360px", overflow="auto"))
        self.workers_out = w.Output()
        # at the PNG's own size: a page as wide as Voila's would stretch it and blur the labels
        self.timeline = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PIXELS}px", max_width="100%"))
        self.throughput = w.Image(format="png", layout=w.Layout(width=f"{PLOT_PIXELS}px", max_width="100%"))
        self.failures_out = w.Output()
        self.partitions_out = w.Output()
        #: The section's title: the config's dispatch until Kafka says whether it has share groups.
        self.partitions_title = w.HTML(f"<b>{GROUP_TITLES[client.config.dispatch == 'shared']}</b>")
        self._shared: bool | None = None  # whether the workers dispatch through the share group, once known
        self.last_task: TaskHandle | None = None
        self.started: list[str] = []  # workers started by this dashboard: close() stops them
        self.closed = False
        self.redraws = 0
        self._draw_lock = threading.Lock()
        self._partitions_at = 0.0

        self.start_button.on_click(self.start_workers)
        self.stop_button.on_click(self.stop_worker)
        for action, button in self.control_buttons.items():
            button.on_click(lambda _b, action=action: self.control(action))
        self.submit_button.on_click(self.submit)
        self.refresh_button.on_click(self.refresh)
        for selector in (self.status_filter, self.op_filter, self.worker_filter):
            selector.observe(lambda _change: self.refresh(), names="value")
        self.op.observe(lambda _change: self._show_usage(), names="value")
        self._show_usage()

        def section(title: str, *children: ipywidgets.Widget) -> ipywidgets.Widget:
            return w.VBox([w.HTML(f"<b>{title}</b>"), *children])

        self.widget = w.VBox(
            [
                section("Workers", w.HBox([self.count, self.start_button, self.stop_button])),
                w.HBox([self.worker_pick, *self.control_buttons.values()]),
                section("Submit Task", w.HBox([self.op, self.args, self.submit_button]), self.usage),
                self.message,
                section(
                    "Task Queue",
                    w.HBox([self.refresh_button, self.live_label]),
                    self.counters,
                    w.HBox([self.status_filter, self.op_filter, self.worker_filter]),
                    self.tasks_out,
                    self.workers_out,
                ),
                section("Timeline", self.timeline, self.throughput),
                section("Failure history", self.failures_out),
                w.VBox([self.partitions_title, self.partitions_out]),
            ]
        )
        self.listener: Listener | None = None
        self.refresh()
        if live:
            from yadtq.monitoring.live import Listener

            self.listener = Listener(client.config, self.refresh, client.config.dashboard_interval)

    # --- actions (button handlers; the ignored argument is the button) ----------------------------
    def start_workers(self, _button: Any = None) -> list[str]:
        """Start ``count`` worker processes; they need a few seconds to join the Kafka group."""
        if self._refuse_if_closed():
            return []
        n = self.count.value
        if not 1 <= n <= MAX_START:
            self.message.value = f"start between 1 and {MAX_START} workers at a time (got {n})"
            return []
        names = [proc.name for proc in self.pool.start(n)]
        self.started += names
        self.message.value = f"started {', '.join(names)}; they join the group in a few seconds"
        self.refresh()
        return names

    def stop_worker(self, _button: Any = None) -> str | None:
        """Stop the newest live worker cleanly: it finishes (or hands back) its task first."""
        if self._refuse_if_closed():
            return None
        live = [self.pool.processes[name] for name in self.pool.alive()]
        if not live:
            self.message.value = "no live worker started from this notebook"
            return None
        name = max(live, key=lambda proc: proc.started_at).name
        self.message.value = f"stopping {name} ..."
        code = self.pool.stop(name)
        self.message.value = f"stopped {name} (exit code {code})"
        self.refresh()
        return name

    def control(self, action: str, name: str | None = None) -> bool:
        """Stop (SIGTERM, graceful), kill (SIGKILL), pause (SIGSTOP) or resume (SIGCONT) one worker
        of the pool: the faults a demonstration needs, on a worker the notebook started."""
        if self._refuse_if_closed():
            return False
        name = name or self.worker_pick.value
        proc = self.pool.processes.get(name or "")
        if proc is None or not proc.alive:
            self.message.value = f"{name or 'no worker'} is not a live worker started from this notebook"
            return False
        if action == "stop":
            code = self.pool.stop(name)
            self.message.value = f"stopped {name} (exit code {code})"
        elif action == "kill":
            self.pool.kill(name)
            self.message.value = f"killed {name} (SIGKILL): its task is requeued once its heartbeats are missed"
        elif action in ("pause", "resume"):
            self.pool.signal(name, signal.SIGSTOP if action == "pause" else signal.SIGCONT)
            note = " (SIGSTOP: it stops heartbeating)" if action == "pause" else ""
            self.message.value = f"{action}d {name}{note}"
        else:
            self.message.value = f"unknown action {action!r}"
            return False
        self.refresh()
        return True

    def submit(self, _button: Any = None) -> TaskHandle | None:
        """Submit the form's task; a refused one changes nothing and says why in the message, and
        an accepted one says so when no worker is running to pick it up."""
        if self._refuse_if_closed():
            return None
        try:
            args = parse_args(self.args.value)
            handle = self.client.submit_with(self.op.value, args, wait=True)
        except (ValueError, YadtqError) as exc:
            self.message.value = f"not submitted: {exc}"
            return None
        self.last_task = handle
        shown = ", ".join(json.dumps(a) for a in args)
        self.message.value = f"submitted {self.op.value}({shown:.60}) as task {handle.id}"
        if not self.client.live_workers():
            self.message.value += (
                ": queued; the workers started here are still joining"
                if self.pool.alive()
                else ": queued; no worker is running (press Start Workers)"
            )
        self.refresh()
        return handle

    def refresh(self, _button: Any = None) -> None:
        """Redraw everything (the listener calls this too). Outputs are set as data, not printed
        inside ``with out:``, so they show the same with or without a kernel (and tests read them)."""
        if self.closed:
            if _button is not None:
                self.message.value = CLOSED
            return
        with self._draw_lock:
            try:
                self._draw()
            except YadtqError as exc:
                self.message.value = f"cannot read the queue: {exc}"

    def _draw(self) -> None:
        """Read and render everything first, then change the widgets together, so the page never
        shows a table from this redraw beside plots from the last one."""
        tasks = self.client.tasks(limit=TABLE_TASKS)
        workers = self.client.workers()
        shown = filter_tasks(tasks, self.status_filter.value, self.op_filter.value, self.worker_filter.value)
        shown = _local_seconds(shown[TASK_VIEW].head(SHOWN_TASKS), "submitted_at")
        timeline, rates = self._plots(tasks, workers)
        dead = failures(self.client)
        parts = None
        if time.monotonic() - self._partitions_at >= PARTITIONS_EVERY:
            self._partitions_at = time.monotonic()
            parts = self._group_table(workers)

        self.counters.value = _counter_html(counters(tasks), len(tasks), TABLE_TASKS)
        self.tasks_out.outputs = (_table("Tasks (newest first)", shown),)
        self.workers_out.outputs = (_table("Workers", _local_seconds(workers[WORKER_VIEW], "last_heartbeat")),)
        self._sync_worker_lists(workers)
        self.timeline.value, self.throughput.value = timeline, rates
        self.failures_out.outputs = (_table("Workers declared dead", dead),)
        if parts is not None:
            self.partitions_out.outputs = (parts,)
            if self._shared is not None:
                self.partitions_title.value = f"<b>{GROUP_TITLES[self._shared]}</b>"
        self.redraws += 1
        listening = self.listener is not None and self.listener.alive
        self.live_label.value = (
            (f"live: {self.listener.events} events, redrawn {datetime.now():%H:%M:%S}" if listening else "not live")
            if self.listener is not None
            else "live updates off: press Refresh"
        )

    def _group_table(self, workers: pd.DataFrame) -> dict[str, Any]:
        """How the workers read the task topic: with shared dispatch the share group (its state and
        offsets, then one row per worker or member: member or not, records in flight, highest
        delivery count), otherwise the partition table. Whether Kafka has share groups is asked
        once (the answer is kept); while Kafka does not answer, the table says so."""
        try:
            if self._shared is None:
                self._shared = shared_dispatch(self.client.config)
            if self._shared:
                group = share_group(self.client.config, workers)
                return _table("Workers and members", counts_as_text(group), note=share_group_title(group))
            return _table("Partitions", partitions(self.client.config, workers))
        except YadtqError as exc:
            what = "share group" if self._shared or self._shared is None else "partitions"
            return _text(f"{what} unavailable: {exc}")

    def _plots(self, tasks: pd.DataFrame, workers: pd.DataFrame) -> tuple[bytes, bytes]:
        import pandas as pd

        from yadtq.monitoring import plots

        beats = self.client.heartbeats()
        window = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=TIMELINE_SECONDS)
        beats = beats[beats["at"] >= window]
        marks = worker_marks(pd.DataFrame(self.client.backend.workers(), columns=["name", "dead_at", "stopped_at"]))
        if self.listener is not None and self.listener.marks:
            seen = pd.DataFrame(list(self.listener.marks))
            seen["at"] = pd.to_datetime(seen["at"], unit="s", utc=True)
            marks = pd.concat([marks, seen], ignore_index=True).drop_duplicates(["worker", "mark", "at"])
        marks = marks[marks["at"] >= window]
        order = sorted(set(beats["worker"]) | set(marks["worker"]), key=_natural)
        figure = plots.new_figure(10, 1.2 + 0.4 * max(len(order), 1))
        plots.timeline(
            figure.add_subplot(), beats, busy_spans(beats, self.client.config.heartbeat_interval), marks, order
        )
        now = pd.Timestamp.now(tz="UTC")
        if not beats.empty:  # a young queue fills the plot rather than its right edge
            young = min(beats["at"].min() - pd.Timedelta(seconds=2), now - pd.Timedelta(seconds=MIN_WINDOW_SECONDS))
            window = max(window, young)
        figure.axes[0].set_xlim(window, now)
        timeline_png = plots.png(figure)
        figure = plots.new_figure(10, 2.6)
        plots.throughput(figure.add_subplot(), throughput(tasks[tasks["finished_at"] >= window]))
        figure.axes[0].set_xlim(window, now)
        return timeline_png, plots.png(figure)

    def _sync_worker_lists(self, workers: pd.DataFrame) -> None:
        """Keep the worker picker (pool workers alive) and the worker filter (all seen) current,
        without resetting a choice that is still valid."""
        alive = sorted(self.pool.alive(), key=_natural)
        if list(self.worker_pick.options) != alive:
            keep = self.worker_pick.value if self.worker_pick.value in alive else None
            self.worker_pick.options = alive
            self.worker_pick.value = keep if keep else (alive[0] if alive else None)
        seen = [("any", ""), *[(n, n) for n in sorted(workers["name"], key=_natural)]]
        if list(self.worker_filter.options) != seen:
            value = self.worker_filter.value
            self.worker_filter.options = seen
            self.worker_filter.value = value if value in dict(seen).values() else ""

    def close(self) -> None:
        """Stop acting on this namespace, before its keys and topics are deleted: the listener stops,
        the workers this dashboard started stop, the buttons are disabled, and a click that still
        arrives (or a call from code) only says so."""
        self.closed = True
        if self.listener is not None:
            self.listener.close()
        with self._draw_lock:  # a redraw in progress finishes before the workers go
            pass
        alive = set(self.pool.alive())
        mine = [n for n in self.started if n in alive]
        for name in mine:  # all at once: each then finishes or hands back its task in parallel
            self.pool.signal(name, signal.SIGCONT)
            self.pool.signal(name, signal.SIGTERM)
        for name in mine:
            self.pool.stop(name)
        for button in (
            self.start_button,
            self.stop_button,
            self.submit_button,
            self.refresh_button,
            *self.control_buttons.values(),
        ):
            button.disabled = True
        self.message.value = CLOSED

    def _refuse_if_closed(self) -> bool:
        if self.closed:
            self.message.value = CLOSED
        return self.closed

    def _show_usage(self) -> None:
        op = registry.get(self.op.value)
        self.usage.value = f"{op.usage}: {op.doc}" if op.doc else op.usage

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Show the widget when the Dashboard is the last expression of a cell."""
        return self.widget._repr_mimebundle_(**kwargs)


def _counter_html(counts: dict[str, int], total: int, limit: int) -> str:
    cells = "".join(
        f'<div style="display:inline-block;min-width:90px;margin-right:8px;text-align:center">'
        f'<div style="font-size:1.6em">{n}</div><div>{status}</div></div>'
        for status, n in counts.items()
    )
    note = f" (of the newest {limit})" if total >= limit else ""
    return f'<div class="yadtq-counters">{cells}{note}</div>'


def _text(text: str) -> dict[str, Any]:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


def _table(title: str, frame: pd.DataFrame, note: str = "") -> dict[str, Any]:
    """A display_data output of a frame, as HTML for the notebook and text for everything else;
    ``note``, one line, goes above the title."""
    html = f"<b>{title}</b> ({len(frame)})" + frame.to_html(index=False, na_rep="")
    text = f"{title} ({len(frame)})\n{frame.to_string(index=False, na_rep='') if len(frame) else '(none)'}"
    if note:
        html, text = f"<div>{escape(note)}</div>{html}", f"{note}\n{text}"
    return {"output_type": "display_data", "data": {"text/html": html, "text/plain": text}, "metadata": {}}


def dashboard(client: Client, pool: Pool, live: bool = True) -> Dashboard:
    """The notebook GUI; display ``.widget`` (or the Dashboard itself) in a cell."""
    return Dashboard(client, pool, live=live)
