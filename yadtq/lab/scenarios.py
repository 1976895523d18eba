"""Ready-made experiments whose outcome is fixed by design, for the lessons and their tests.

:func:`crash_mid_batch` makes the three delivery semantics differ by a known count. One worker with
two slots owns the only partition. Task 0 is long (slot 1); ten short tasks then run one after
another on slot 2 and finish, but their offsets cannot be committed: a partition is committed only
up to its oldest unsettled message, task 0. The last task is long too and starts on slot 2. The
worker is killed while both long tasks run and a replacement is started, so Kafka gives the
replacement every message from task 0 on:

- ``at_most_once`` committed each offset before running it, so the two running tasks are never
  redelivered: **2 lost**;
- ``at_least_once`` runs every redelivered message again, so the ten finished short tasks run a
  second time: **10 duplicated** (and the two long ones restarted);
- ``effectively_once`` skips the ten (their records say ``success``) and reruns only the two that
  never finished: **none lost or duplicated** (2 restarted, which no delivery mode can avoid when a
  worker dies mid-task).

Tasks are sent 0.1 s apart, so they reach the partition in order, and every time has at least a
second of slack on each side (the short tasks are done about 1.5-2.5 s after the start, the kill
comes at 3.5 s, the long tasks end after 6 s), so the counts do not depend on luck or on a busy
machine (at most once, each claim also waits for its commit).
"""

from __future__ import annotations

from yadtq.lab.spec import Experiment, Fault

#: How many short tasks finish, uncommitted, before the crash; and how many long tasks it cuts.
SHORT_TASKS = 10
LONG_TASKS = 2


def crash_mid_batch(delivery: str = "effectively_once", kill_at: float = 3.5) -> Experiment:
    """The crash of :mod:`this module's docstring <yadtq.lab.scenarios>` under ``delivery``."""
    return Experiment(
        name=f"crash-{delivery.replace('_', '-')}",
        arrival="constant",
        arrival_rate=10.0,
        service="sequence",
        service_times=(6.0, *[0.1] * SHORT_TASKS, 5.0),
        workers=1,
        concurrency=2,
        partitions=1,
        tasks=SHORT_TASKS + LONG_TASKS,
        delivery=delivery,
        faults=(Fault(at=kill_at, action="kill"), Fault(at=kill_at, action="start")),
    )
