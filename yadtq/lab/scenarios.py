"""Ready-made experiments whose outcome is fixed by design, for the lessons and their tests.

:func:`crash_mid_batch` makes the three delivery semantics differ by a known count. It is about a
consumer group's offsets, so it uses ``partitioned`` dispatch: one worker with three slots owns the
only partition. Tasks 0 and 1 are long (9 s and 8 s) and take slots 1 and 2; ten short tasks
(0.1 s) then run one after another on slot 3 and finish, but their offsets cannot be committed: a
partition is committed only up to its oldest unsettled message, task 0. At 5 s the worker is killed
while both long tasks run, and a replacement is started, so Kafka gives the replacement every
message from task 0 on:

- ``at_most_once`` committed each offset before running it, so the two running tasks are never
  redelivered: **2 lost**;
- ``at_least_once`` runs every redelivered message again, so the ten finished short tasks run a
  second time: **10 duplicated** (and the two long ones restarted);
- ``effectively_once`` skips the ten (their records say ``success``) and reruns only the two that
  never finished: **none lost or duplicated** (2 restarted, which no delivery mode can avoid when a
  worker dies mid-task).

Tasks are sent 0.1 s apart, so they reach the partition in order. The long tasks start at once, on
slots of their own, and end 3 s after the kill at the earliest; the short ones need about 1-2 s
(at most once, each claim also waits for its commit), which leaves 3 s of slack even on a machine
so busy that each short task takes 0.4 s.
"""

from __future__ import annotations

from yadtq.lab.spec import Experiment, Fault

#: How many short tasks finish, uncommitted, before the crash; and how many long tasks it cuts.
SHORT_TASKS = 10
LONG_TASKS = 2


def crash_mid_batch(delivery: str = "effectively_once", kill_at: float = 5.0) -> Experiment:
    """The crash of :mod:`this module's docstring <yadtq.lab.scenarios>` under ``delivery``."""
    return Experiment(
        name=f"crash-{delivery.replace('_', '-')}",
        arrival="constant",
        arrival_rate=10.0,
        service="sequence",
        service_times=(9.0, 8.0, *[0.1] * SHORT_TASKS),
        workers=1,
        concurrency=3,
        partitions=1,
        dispatch="partitioned",  # a consumer group: offsets committed up to the oldest unsettled message
        tasks=SHORT_TASKS + LONG_TASKS,
        delivery=delivery,
        faults=(Fault(at=kill_at, action="kill"), Fault(at=kill_at, action="start")),
    )
