"""Failure detection on the real Kafka and Redis: every kind of fault in one run, and its timing.

Detection is read from the reaper's own ``worker ... dead`` events on the namespace's channel; the
false positive is confirmed by a second, separate count: the worker's ``revived`` counter, which the
heartbeat script increments when a worker declared dead heartbeats again.
"""

from __future__ import annotations

import math

import pytest

from tests.lab.test_lab_run import assert_cleaned_up
from yadtq.core.config import Config
from yadtq.lab.detection import schedule
from yadtq.lab.run import run

pytestmark = [pytest.mark.services, pytest.mark.slow]

#: Scheduling on a shared 2-core machine: a heartbeat or a reaper run may come this much late.
SLACK = 0.6
#: Seconds a crashed worker's task may take to finish elsewhere once the crash is detected.
RECOVERY_DEADLINE = 20.0


@pytest.mark.timeout(180)
def test_faults_are_detected_within_the_heartbeat_bounds_and_a_long_pause_is_revived(base_config: Config) -> None:
    h, t = 1.0, 2.5
    result = run(schedule(interval=h, timeout=t, short_pause=1.0, long_pause=5.0), config=base_config, progress=False)
    faults, s = result.faults, result.summary
    print(faults.to_string())
    assert list(faults["action"]) == ["pause", "resume", "term", "start", "pause", "resume", "kill"]
    short, term, long_, kill = (faults.iloc[i] for i in (0, 2, 4, 6))

    # a 1 s pause is shorter than T - h = 1.5 s: never declared dead
    assert math.isnan(short["detected"]) and short["revived"] == 0
    # a 5 s pause and a crash: declared dead after T - h to T + h seconds
    for row in (long_, kill):
        assert t - h - 0.1 <= row["detected"] <= t + h + SLACK, row.to_dict()
    assert long_["revived"] == 1
    # the worker records, read before the clean-up, count the same: worker-1 came back once
    assert s["workers_revived"] == {"worker-1": 1, "worker-2": 0, "worker-3": 0, "worker-4": 0}
    assert result.beats is not None and set(result.beats["worker"]) == set(s["workers_revived"])
    # a graceful stop says so itself, after finishing its task (0.5 s)
    assert 0 <= term["detected"] <= 0.5 + 2 * h + SLACK
    # a crashed worker's task finished elsewhere, after the detection (effectively once: the
    # redelivery waits while the holder's heartbeat is fresh), and within a deadline; how soon is a
    # figure the lab reports (and the recovery benchmark measures), not a bound for a loaded machine
    if kill["held"]:
        assert kill["detected"] - SLACK <= kill["recovered"] <= kill["detected"] + RECOVERY_DEADLINE
    # A task can run to its end twice (by the tasks' own counts) only if a fault caught it: the long
    # pause (SIGSTOP stops the worker, not the executor running its task, which finishes while the
    # task is handed to another worker) or the kill (between the task's end and its stored result).
    assert s["audit_duplicated"] <= long_["held"] + kill["held"]
    # Losses are reported, not asserted: after the long pause (longer than Kafka's session timeout)
    # a few tasks published meanwhile were seen to stay queued with no execution in some runs, a
    # rebalance problem outside the lab (see docs/lab.md, Limits).
    print(f"lost {s['audit_lost']}, duplicated {s['audit_duplicated']}, submit errors {s['audit_submit_errors']}")
    assert_cleaned_up(base_config, s["namespace"])
