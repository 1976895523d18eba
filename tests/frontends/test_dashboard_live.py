"""The live dashboard driven by its widgets against the real Kafka and Redis.

Nothing here presses Refresh: each check waits for what the listener redraws on its own. A kill
from the worker controls must show up as a dead mark, a failure-history row and the task finished
by the other worker; pause and resume as dead then revived; closing stops the listener and the
workers the dashboard started. With shared dispatch the last section shows the share group (members,
records in flight, delivery counts); with partitioned dispatch, the partition table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import live_workers
from yadtq import Client, Pool, TaskStatus
from yadtq.core.config import Config
from yadtq.frontends.dashboard import dashboard
from yadtq.frontends.watch import screen
from yadtq.monitoring.monitor import share_group

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

        # shared dispatch: the share group, where Kafka lists the killed worker until its session times out
        def settled() -> bool:
            killed = member_row(dash, busy).split()[1:2] in ([], ["dead"])
            return killed and member_row(dash, other).endswith(" True 0")

        wait_for(settled, timeout=15, what="the survivor a member, the killed worker dead or gone")
        assert dash.partitions_title.value == "<b>Share group</b>"
        assert text(dash.partitions_out).startswith(f"Share group {client.config.share_group_id}: ")
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


def member_row(dash: object, name: str) -> str:
    """The share-group table's row of a worker ("" when it has none), without its counts:
    "worker state member partitions"."""
    for line in text(dash.partitions_out).splitlines():  # type: ignore[attr-defined]
        if line.split()[:1] == [name]:
            cells = line.split()
            return " ".join(cells[:4]) if len(cells) >= 6 else " ".join(cells)
    return ""


def test_the_share_group_shows_both_members_and_their_records_in_flight(
    client: Client, pool: Pool, wait_for: Callable[..., object]
) -> None:
    """Shared dispatch: two workers are members of the share group; while they run tasks, the
    dashboard's section, the read model and ``yadtq watch`` show each one's records in flight."""
    dash = dashboard(client, pool, live=False)
    try:
        assert dash.partitions_title.value == "<b>Share group</b>"
        pool.start(2)
        wait_for(live_workers(client, 2), timeout=60, what="two workers up")
        wait_for(
            lambda: share_group(client.config, client.workers())["member"].sum() == 2,
            timeout=30,
            what="both workers members of the share group",
        )
        handles = [client.submit("sleep", 4) for _ in range(4)]

        def both_holding() -> list[pd.DataFrame]:  # a list: a frame has no truth value for wait_for
            frame = share_group(client.config, client.workers()).set_index("worker")
            held = frame.loc[["worker-1", "worker-2"], "in_flight"]
            return [frame] if held.notna().all() and (held > 0).all() else []

        (frame,) = wait_for(both_holding, timeout=30, what="both workers holding a record")  # type: ignore[misc]
        assert frame.loc[["worker-1", "worker-2"], "member"].all()
        assert list(frame.loc[["worker-1", "worker-2"], "partitions"]) == ["0", "0"]
        assert (frame["max_delivery_count"].dropna() >= 1).all()
        assert frame.attrs["group_state"] == "Stable"
        assert frame.attrs["offsets"][0]["partition"] == 0 and frame.attrs["offsets"][0]["end"] >= 4

        dash._partitions_at = 0.0  # the section is read every PARTITIONS_EVERY seconds
        dash.refresh()
        shown = text(dash.partitions_out)
        assert "2 member(s)" in shown.splitlines()[0]
        for name in ("worker-1", "worker-2"):
            cells = next(line for line in shown.splitlines() if line.split()[:1] == [name]).split()
            assert cells[1:4] == ["busy", "True", "0"] and int(cells[4]) >= 1, shown

        watched = screen(client)
        header = next(line for line in watched.splitlines() if line.split()[:1] == ["name"])
        assert "in_flight" in header.split() and "max_delivery_count" in header.split()

        for handle in handles:
            assert handle.result(timeout=60) == 4
        wait_for(
            lambda: (share_group(client.config, client.workers())["in_flight"] == 0).all(),
            timeout=10,
            what="nothing in flight once the tasks are done",
        )
    finally:
        dash.close()


def test_partitioned_dispatch_keeps_the_partition_table(
    make_config: Callable[..., Config], tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    config = make_config(dispatch="partitioned", partitions=3)
    with Client(config) as client, Pool(config, log_dir=tmp_path / "workers") as pool:
        dash = dashboard(client, pool, live=False)
        try:
            assert dash.partitions_title.value == "<b>Partitions of the task topic</b>"
            pool.start(1)
            wait_for(live_workers(client, 1), timeout=60, what="the worker owning partitions")

            def table() -> str:
                dash._partitions_at = 0.0
                dash.refresh()
                return text(dash.partitions_out)

            wait_for(lambda: table().count("worker-1") == 3, timeout=15, what="the worker on every partition")
            assert table().startswith("Partitions (3)")
            assert "in_flight" not in screen(client), "a partitioned worker reports no records in flight"
        finally:
            dash.close()


def dead_marked(dash: object) -> bool:
    return any(m["mark"] == "dead" for m in dash.listener.marks)  # type: ignore[attr-defined]


def revived_marked(dash: object) -> bool:
    return any(m["mark"] == "revived" for m in dash.listener.marks)  # type: ignore[attr-defined]
