"""``yadtq watch``: a live terminal view of the counters, the workers and the newest tasks.

The screen is redrawn when events arrive on the events channel, at most once per ``interval``
seconds (the same rule as the notebook dashboard), and at least every few seconds so that a worker
going silent shows up as ``unresponsive`` even when nothing else happens.

With shared dispatch the worker rows also show ``in_flight`` (records of the share group the worker
holds: acquired, not yet acknowledged) and ``max_delivery_count`` (the highest delivery count among
them), from its heartbeats; the view asks nothing of Kafka.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.frontends.tables import render
from yadtq.monitoring.monitor import COUNT_COLUMNS, counters, counts_as_text
from yadtq.worker.events import EventStream

#: Redraw at least this often without events.
QUIET_REDRAW = 3.0
#: Newest tasks shown, and tasks read for the counters.
SHOWN = 10
COUNTED = 1000
CLEAR = "\x1b[H\x1b[2J"
#: Columns of the worker table; :data:`~yadtq.monitoring.monitor.COUNT_COLUMNS` go after ``partitions`` when
#: some worker reports them (shared dispatch).
WORKER_COLUMNS = ["name", "state", "current_task", "processed", "failed", "partitions", "last_heartbeat"]


def screen(client: Client) -> str:
    """One frame of the view, as text (also what ``--once`` prints)."""
    tasks = client.tasks(limit=COUNTED)
    counts = counters(tasks)
    total = client.backend.count_tasks()
    head = "  ".join(f"{status} {n}" for status, n in counts.items())
    workers = client.workers()
    columns = list(WORKER_COLUMNS)
    if workers[list(COUNT_COLUMNS)].notna().any(axis=None):  # shared-dispatch workers report them
        after = columns.index("partitions") + 1
        columns[after:after] = COUNT_COLUMNS
        workers = counts_as_text(workers)
    lines = [
        f"yadtq {client.config.namespace}  {time.strftime('%H:%M:%S')}  ({total} tasks; counted: newest {COUNTED})",
        head,
        "",
        f"Workers ({len(workers)})",
        render(workers[columns]),
        "",
        f"Newest tasks ({min(SHOWN, len(tasks))})",
        render(tasks.head(SHOWN)[["id", "op", "args", "status", "result", "worker", "attempts", "finished_at"]]),
    ]
    return "\n".join(lines)


def watch(
    config: Config,
    once: bool = False,
    duration: float | None = None,
    interval: float = 1.0,
    out: TextIO = sys.stdout,
) -> int:
    """Draw until Ctrl-C, or ``duration`` seconds; ``once`` prints one frame. Returns frames drawn."""
    with Client(config) as client:
        if once:
            print(screen(client), file=out)
            return 1
        clear = CLEAR if out.isatty() else "\n"
        deadline = None if duration is None else time.monotonic() + duration
        frames, last, stale = 0, 0.0, True
        with EventStream(config) as stream:
            while deadline is None or time.monotonic() < deadline:
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
                if stream.next(wait) is not None:
                    stale = True
                now = time.monotonic()
                if (stale and now - last >= interval) or now - last >= QUIET_REDRAW:
                    print(clear + screen(client), file=out, flush=True)
                    frames, last, stale = frames + 1, now, False
        return frames
