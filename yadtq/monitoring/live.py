"""A background listener on the events channel that calls a redraw at a bounded rate.

The dashboard must follow the queue without anyone pressing Refresh, yet a busy queue publishes
hundreds of events a second and a redraw reads tables and renders plots. So events only mark the
view as stale; the listener redraws at most once per ``interval`` seconds, once after the last
event of a burst, and never per key. It also keeps what the Redis records forget: each time a
worker was declared dead, came back (revived) or stopped, as marks for the timeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from yadtq.core.config import Config
from yadtq.worker.events import EventStream

log = logging.getLogger(__name__)

#: Marks kept for the timeline; older ones fall off (a long demo does not grow without bound).
MARKS_KEPT = 1000
#: How often the listener wakes without events, so that it stops promptly when asked.
WAKE = 0.2


class Listener:
    """Follow ``NS:events`` on a daemon thread; call ``redraw()`` at most every ``interval`` seconds
    while events arrive. :meth:`close` stops and joins the thread within a deadline."""

    def __init__(self, config: Config, redraw: Callable[[], None], interval: float = 1.0) -> None:
        self.config = config
        self.redraw = redraw
        self.interval = interval
        self.events = 0
        self.marks: deque[dict[str, Any]] = deque(maxlen=MARKS_KEPT)
        self._states: dict[str, str] = {}
        self._stream = EventStream(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="yadtq-dashboard-listener", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._stream.close()

    def _loop(self) -> None:
        stale, last = False, 0.0
        while not self._stop.is_set():
            try:
                event = self._stream.next(WAKE)
            except Exception as exc:  # Redis went away: say so once, retry calmly
                log.warning("dashboard listener: %s", exc)
                self._stop.wait(1.0)
                continue
            while event is not None:  # take every event already here: a redraw shows them all
                self.events += 1
                self._note(event)
                stale = True
                event = self._stream.next(0)
            if stale and time.monotonic() - last >= self.interval and not self._stop.is_set():
                stale = False
                try:
                    self.redraw()
                except Exception:  # a redraw must never kill the listener
                    log.exception("dashboard redraw failed")
                last = time.monotonic()  # the interval is a pause between redraws, however long they take

    def _note(self, event: dict[str, Any]) -> None:
        """Record dead, revived and stopped as marks: a revival is a heartbeat after a death."""
        worker, kind = event.get("worker"), event.get("type")
        if not worker or kind not in ("worker", "heartbeat"):
            return
        state, before = str(event.get("state")), self._states.get(worker)
        if kind == "worker" and state == "dead":
            self.marks.append({"worker": worker, "at": event.get("at"), "mark": "dead"})
        elif before == "dead" and state not in ("dead", "stopped"):
            self.marks.append({"worker": worker, "at": event.get("at"), "mark": "revived"})
        elif state == "stopped" and before != "stopped":
            self.marks.append({"worker": worker, "at": event.get("at"), "mark": "stopped"})
        self._states[worker] = state
