"""The live dashboard driven by its widgets against the real Kafka and Redis.

Nothing here presses Refresh: each check waits for what the listener redraws on its own. A kill
from the worker controls must show up as a dead mark, a failure-history row and the task finished
by the other worker; pause and resume as dead then revived; closing stops the listener and the
workers the dashboard started.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from yadtq import Client, Pool, TaskStatus
from yadtq.dashboard import dashboard

pytestmark = pytest.mark.services


def text(output: object) -> str:
    (shown,) = output.outputs  # type: ignore[attr-defined]
    return str(shown["data"]["text/plain"])


def test_kill_from_the_dashboard_shows_the_gap_the_failure_and_the_task_finished_elsewhere(
    client: Client, pool: Pool, wait_for: Callable[..., object]
) -> None:
    dash = dashboard(client, pool)
    try:
        dash.count.value = 2
        dash.start_button.click()
        assert dash.started == ["worker-1", "worker-2"]
        wait_for(lambda: len(dash.worker_pick.options) == 2, timeout=10, what="the worker picker to list both")
        wait_for(lambda: "worker-2" in text(dash.workers_out), timeout=60, what="both workers in the table")

        dash.op.value, dash.args.value = "sleep", "[4]"
        dash.submit_button.click()
        handle = dash.last_task
        assert handle is not None, dash.message.value
        wait_for(lambda: "processing" in text(dash.tasks_out), timeout=60, what="the task shown processing")
        busy = client.task(handle.id)["worker"]
        other = ({"worker-1", "worker-2"} - {busy}).pop()

        dash.worker_pick.value = busy
        dash.control_buttons["kill"].click()
        assert f"killed {busy}" in dash.message.value
        assert busy not in pool.alive()

        wait_for(lambda: handle.status() is TaskStatus.SUCCESS, timeout=60, what="the task to finish elsewhere")
        wait_for(lambda: "success" in text(dash.tasks_out), timeout=10, what="the table to show success")
        row = next(line for line in text(dash.tasks_out).splitlines() if handle.id in line)
        assert other in row and "success" in row

        def failure() -> str:
            return next((line for line in text(dash.failures_out).splitlines() if line.startswith(busy)), "")

        wait_for(lambda: "success" in failure(), timeout=10, what="the failure history to show the outcome")
        assert handle.id in failure() and other in failure()
        assert any(m["worker"] == busy and m["mark"] == "dead" for m in dash.listener.marks)
        assert ">1</div><div>success" in dash.counters.value.replace("\n", "")
        assert bytes(dash.timeline.value).startswith(b"\x89PNG") and bytes(dash.throughput.value).startswith(b"\x89PNG")
        wait_for(lambda: other in text(dash.partitions_out), timeout=15, what="the survivor owning partitions")
        partitions = text(dash.partitions_out)
        assert len(partitions.splitlines()) == 2 + client.config.partitions  # title, header, one per partition
        assert busy not in partitions
    finally:
        dash.close()
    assert not dash.listener.alive
    assert pool.alive() == []


def test_pause_and_resume_mark_dead_then_revived_and_redraws_stay_bounded(
    client: Client, pool: Pool, wait_for: Callable[..., object]
) -> None:
    dash = dashboard(client, pool)
    try:
        pool.start(1)  # from code, not from the dashboard: close() must leave it running
        wait_for(lambda: dash.worker_pick.options == ("worker-1",), timeout=30, what="the picker to list it")
        wait_for(lambda: "idle" in text(dash.workers_out), timeout=60, what="the worker idle")

        before, started = dash.redraws, time.monotonic()
        dash.worker_pick.value = "worker-1"
        dash.control_buttons["pause"].click()
        assert dash.message.value.startswith("paused worker-1")
        # no other worker runs to declare it dead, so the test plays that worker's reaper
        time.sleep(client.config.heartbeat_timeout + 0.5)
        wait_for(lambda: client.backend.reap() is not None and dead_marked(dash), timeout=20, what="a dead mark")
        dash.control_buttons["resume"].click()
        wait_for(lambda: revived_marked(dash), timeout=20, what="a revived mark")
        elapsed = time.monotonic() - started
        redraws = dash.redraws - before
        # manual redraws: one per control click; the rest are the listener's, at most one per interval
        assert redraws <= elapsed / client.config.dashboard_interval + 1 + 2, (redraws, elapsed)
        assert redraws >= 2
    finally:
        dash.close()
    assert not dash.listener.alive
    assert pool.alive() == ["worker-1"]


def dead_marked(dash: object) -> bool:
    return any(m["mark"] == "dead" for m in dash.listener.marks)  # type: ignore[attr-defined]


def revived_marked(dash: object) -> bool:
    return any(m["mark"] == "revived" for m in dash.listener.marks)  # type: ignore[attr-defined]
