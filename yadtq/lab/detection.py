"""Failure detection: how heartbeats and a timeout tell a dead worker from a slow one, and at what cost.

yadtq's rule (``scripts.REAP``, run by every live worker after each of its heartbeats): a worker
whose last heartbeat is more than ``heartbeat_timeout`` old is declared dead, and its task handed
to someone else. The detector cannot tell a crashed worker from a *paused* one (SIGSTOP, a long
garbage collection, a laptop lid closed, a VM migrated): both are silent. So the two settings trade
off

- **detection delay**: how long a crashed worker's task waits before it runs elsewhere, against
- **false positives**: how often a worker that was only paused is declared dead (its task then
  runs twice, and the worker's own result is discarded when it wakes up: it is ``revived``).

:func:`model` computes both exactly for the rule, by Monte Carlo over the unknown phases: the
victim's last heartbeat came some time ``U·h`` before the fault (``U`` uniform), and each live peer
reaps at its own heartbeats, every ``h`` seconds at a uniform phase. The fault is detected at the
first reaper run at least ``T`` after the last heartbeat; a pause of length ``p`` is a false positive
if that comes before the worker resumes (then it heartbeats at once). With one peer the delay lies
between ``T - h`` and ``T + h`` and averages ``T``; a pause shorter than ``T - h`` is never declared
dead, one longer than ``T + h`` always is. What the model leaves out (the time to write a heartbeat,
thread scheduling, clock steps) is what the real runs of :func:`schedule` measure.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from yadtq.lab.spec import Experiment, Fault


def model(
    interval: float,
    timeout: float,
    pauses: Sequence[float] = (),
    peers: int = 1,
    trials: int = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    """Detection delay of a crash (mean, 95th percentile, min, max) and, for each pause length,
    the probability that the paused worker is declared dead (``false_positive_<p>``)."""
    if not (0 < interval < timeout) or peers < 1 or trials < 1:
        raise ValueError("need 0 < interval < timeout, at least one peer and one trial")
    rng = np.random.default_rng(seed)
    since_beat = rng.uniform(0, interval, trials)  # the victim's last heartbeat, before the fault
    stale_at = timeout - since_beat  # from the fault: when the heartbeat becomes too old
    phases = rng.uniform(0, interval, (peers, trials))  # each peer's reaper runs at phase + n·h
    runs = phases + np.ceil(np.maximum(stale_at - phases, 0) / interval) * interval
    delay = runs.min(axis=0)
    out = {
        "interval": interval,
        "timeout": timeout,
        "peers": float(peers),
        "delay_mean": float(delay.mean()),
        "delay_p95": float(np.percentile(delay, 95)),
        "delay_min": float(delay.min()),
        "delay_max": float(delay.max()),
    }
    for pause in pauses:
        out[f"false_positive_{pause:g}"] = float((delay < pause).mean())
    return out


def study(
    intervals: Sequence[float],
    timeouts: Sequence[float],
    pauses: Sequence[float],
    peers: int = 1,
    trials: int = 20_000,
) -> pd.DataFrame:
    """:func:`model` over every (interval, timeout) with ``interval < timeout``: one row each."""
    rows = [
        model(h, t, pauses, peers, trials, seed=i)
        for i, (h, t) in enumerate(itertools.product(intervals, timeouts))
        if h < t
    ]
    return pd.DataFrame(rows)


def schedule(
    interval: float = 1.0, timeout: float = 2.5, short_pause: float = 1.0, long_pause: float = 5.0
) -> Experiment:
    """A real run with every kind of fault, one after another, on three workers plus a replacement:

    worker-1 is paused for ``short_pause`` (at 1 s) and later for ``long_pause`` (at 5 s);
    worker-2 gets SIGTERM (at 3 s) and a replacement, worker-4, is started (at 4 s); worker-3 is
    killed (at 12 s). Tasks of 0.5 s arrive three a second for 16 s, so workers usually hold one
    when the fault comes. There is always a live peer to run the reaper.
    """
    faults = (
        Fault(at=1.0, action="pause_for", worker=0, seconds=short_pause),
        Fault(at=3.0, action="term", worker=1),
        Fault(at=4.0, action="start"),
        Fault(at=5.0, action="pause_for", worker=0, seconds=long_pause),
        Fault(at=max(12.0, 5.0 + long_pause + 2.0), action="kill", worker=2),
    )
    return Experiment(
        name=f"faults-h{interval:g}-t{timeout:g}",
        arrival="constant",
        arrival_rate=3.0,
        service="constant",
        service_seconds=0.5,
        workers=3,
        partitions=6,
        tasks=None,
        duration=faults[-1].at + 4.0,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        faults=faults,
    )


def plot(frame: pd.DataFrame, measured: pd.DataFrame | None = None, ax: object = None) -> object:
    """False positives (a paused, live worker declared dead) against the mean detection delay of a
    crash, from :func:`study`: one colour per pause length, one line style per heartbeat interval,
    each line running over the timeouts. ``measured`` (columns delay, pause, declared) adds the real
    runs as stars."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5))
    pauses = [c for c in frame.columns if c.startswith("false_positive_")]
    styles = ["-", "--", ":", "-."]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, column in enumerate(pauses):
        for j, (interval, group) in enumerate(frame.groupby("interval")):
            data = group.sort_values("timeout")
            ax.plot(
                data["delay_mean"],
                100 * data[column],
                styles[j % len(styles)],
                marker="o",
                ms=3,
                color=colours[i % len(colours)],
                label=f"pause {column.rsplit('_', 1)[1]} s, h = {interval:g} s",
            )
    if measured is not None and len(measured):
        ax.scatter(
            measured["delay"], 100 * measured["declared"], marker="*", s=180, c="black", zorder=5, label="real runs"
        )
    ax.set_xlabel("mean detection delay of a crash (s)  [about the timeout T]")
    ax.set_ylabel("paused worker declared dead (%)")
    ax.set_ylim(-5, 105)
    ax.set_title("Failure detection: faster means more false positives")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax
