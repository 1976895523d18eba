"""Read models for monitoring: counters, filters, throughput, latency, busy spans, failures, partitions.

Every function takes frames the client already returns (``client.tasks()``, ``client.workers()``,
``client.heartbeats()``) and gives back a small DataFrame or dict, so the notebook dashboard, the
terminal ``watch``, the HTML report and the Prometheus exporter all compute the same figures, and
tests check them without a screen. Only :func:`partitions` and :func:`share_group` talk to a service
(Kafka), with a deadline on each call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from yadtq.client.client import Client
    from yadtq.core.config import Config

#: The statuses the counters show, in the order a task goes through them.
STATUSES = ("queued", "processing", "retrying", "success", "failed", "cancelled")
#: Statuses after which a task does not change again.
FINISHED = ("success", "failed", "cancelled")
#: End-to-end latency percentiles shown over time.
PERCENTILES = (50, 90, 99)
#: Kafka calls made for the partition and share-group tables give up after this many milliseconds,
#: so a broker that does not answer slows a redraw down by at most this much per call.
KAFKA_TIMEOUT_MS = 3000
#: Columns of the share-group table (:func:`share_group`).
SHARE_GROUP_COLUMNS = ["worker", "state", "member", "partitions", "in_flight", "max_delivery_count"]
#: Columns of worker records and of the share-group table that shared-dispatch workers report.
COUNT_COLUMNS = ("in_flight", "max_delivery_count")
#: Worker states (as ``Client.workers`` shows them) of a worker that is running: the others
#: (stopped, dead, unresponsive) appear in the share-group table only while Kafka lists them.
RUNNING_STATES = ("starting", "idle", "idle (no partition)", "busy", "stopping")


def counters(tasks: pd.DataFrame) -> dict[str, int]:
    """How many tasks are in each status (every status present, zero when none)."""
    counts = tasks["status"].value_counts() if len(tasks) else {}
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def filter_tasks(
    tasks: pd.DataFrame, status: str | None = None, op: str | None = None, worker: str | None = None
) -> pd.DataFrame:
    """The rows matching every filter given; ``None`` or ``""`` means any."""
    keep = tasks.index == tasks.index
    for column, value in (("status", status), ("op", op), ("worker", worker)):
        if value:
            keep &= tasks[column] == value
    return tasks[keep]


def latencies(tasks: pd.DataFrame) -> pd.DataFrame:
    """Finished tasks with ``finished_at`` and ``latency`` (seconds from submit to finish): what a
    caller waited, queueing included, which is what a person watching the queue cares about."""
    import pandas as pd

    done = tasks[tasks["status"].isin(FINISHED) & tasks["finished_at"].notna() & tasks["submitted_at"].notna()]
    latency = (done["finished_at"] - done["submitted_at"]).dt.total_seconds()
    return pd.DataFrame({"finished_at": done["finished_at"], "latency": latency}).sort_values(
        "finished_at", ignore_index=True
    )


def throughput(tasks: pd.DataFrame, every: str = "1s") -> pd.DataFrame:
    """Tasks finished per second, in bins of ``every`` (a pandas frequency), with the end-to-end
    latency percentiles of the tasks finished in each bin (columns p50, p90, p99)."""
    import pandas as pd

    done = latencies(tasks)
    columns = ["at", "per_second"] + [f"p{p}" for p in PERCENTILES]
    if done.empty:
        return pd.DataFrame(columns=columns)
    bins = done.set_index("finished_at")["latency"].resample(every)
    seconds = pd.Timedelta(every).total_seconds()
    frame = pd.DataFrame({"per_second": bins.count() / seconds})
    for p in PERCENTILES:
        frame[f"p{p}"] = bins.quantile(p / 100)
    return frame.rename_axis("at").reset_index()[columns]


def busy_spans(beats: pd.DataFrame, interval: float) -> pd.DataFrame:
    """Runs of consecutive busy heartbeats per worker as (worker, start, end, task) bars: the bar
    ends at the first beat that is not busy, or one interval after the last busy beat if the
    worker fell silent (it died while busy: the bar stops where its heartbeats stopped)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for worker, part in beats.sort_values("at").groupby("worker", sort=False):
        start: Any = None
        task = ""
        for at, state, current in zip(part["at"], part["state"], part["task"], strict=True):
            if state == "busy" and start is None:
                start, task = at, current
            elif state != "busy" and start is not None:
                rows.append({"worker": worker, "start": start, "end": at, "task": task})
                start = None
        if start is not None:
            end = part["at"].iloc[-1] + pd.Timedelta(seconds=interval)
            rows.append({"worker": worker, "start": start, "end": end, "task": task})
    return pd.DataFrame(rows, columns=["worker", "start", "end", "task"])


def worker_marks(workers: pd.DataFrame) -> pd.DataFrame:
    """Points on the timeline where a worker was declared dead or stopped, from the worker records
    (the live dashboard adds ``revived`` marks from the events it sees)."""
    import pandas as pd

    rows = []
    for _, row in workers.iterrows():
        for column, mark in (("dead_at", "dead"), ("stopped_at", "stopped")):
            at = row.get(column)
            if at is not None and not pd.isna(at):
                rows.append({"worker": row["name"], "at": at, "mark": mark})
    frame = pd.DataFrame(rows, columns=["worker", "at", "mark"])
    frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True) if rows else pd.to_datetime(frame["at"], utc=True)
    return frame


def failures(client: Client) -> pd.DataFrame:
    """Every worker declared dead: when, its last heartbeat, the task it held, and what became of
    that task (its status now, who ran it last, how many attempts it took)."""
    import pandas as pd

    rows = []
    for record in client.backend.workers():
        if not record.get("dead_at"):
            continue
        # The tasks taken back from it when it was found silent; its last heartbeat may predate a
        # claim made just before it died, so current_task alone can miss the task it held.
        held = record.get("lost_tasks") or record.get("current_task") or ""
        held = [t for t in str(held).split(",") if t] or [""]
        for task_id in held:
            task = client.backend.task(task_id) if task_id else None
            rows.append(
                {
                    "worker": record["name"],
                    "dead_at": record["dead_at"],
                    "last_heartbeat": record.get("last_heartbeat"),
                    "task": task_id,
                    "task_status": (task or {}).get("status", ""),
                    "finished_by": (task or {}).get("worker", ""),
                    "attempts": (task or {}).get("attempts"),
                    "revived": int(record.get("revived") or 0),
                }
            )
    frame = pd.DataFrame(
        rows,
        columns=["worker", "dead_at", "last_heartbeat", "task", "task_status", "finished_by", "attempts", "revived"],
    )
    for column in ("dead_at", "last_heartbeat"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame.sort_values("dead_at", ignore_index=True)


def owned(cell: object) -> set[int]:
    """The partitions in a worker row's ``partitions`` cell ("0,3,5", written at each heartbeat;
    empty or missing when it owns none)."""
    return {int(part) for part in str(cell or "").split(",") if part.strip().isdigit()}


def partitions(config: Config, workers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each partition of the task topic: the worker that owns it now (as its heartbeat reports the
    assignment Kafka gave it), the group's committed offset, the end offset and the lag, both from
    the broker. Raises ServiceUnavailable if Kafka does not answer within :data:`KAFKA_TIMEOUT_MS`."""
    import pandas as pd
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import OffsetSpec
    from kafka.errors import KafkaError

    from yadtq.core.errors import ServiceUnavailable

    owners: dict[int, str] = {}
    if workers is not None:
        live = workers[workers["state"].isin(["idle", "busy", "stopping"])]
        for name, parts in zip(live["name"], live["partitions"], strict=True):
            owners.update(dict.fromkeys(owned(parts), name))
    try:
        admin = KafkaAdminClient(
            **config.kafka_options(), request_timeout_ms=KAFKA_TIMEOUT_MS, bootstrap_timeout_ms=KAFKA_TIMEOUT_MS
        )
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka did not answer: {exc}") from None
    try:
        described = admin.describe_topics([config.task_topic])
        numbers = sorted(p["partition_index"] for t in described for p in t.get("partitions", []))
        tps = [TopicPartition(config.task_topic, n) for n in numbers]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}, timeout_ms=KAFKA_TIMEOUT_MS)
        committed = admin.list_group_offsets({config.group_id: tps}).get(config.group_id, {})
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka did not answer: {exc}") from None
    finally:
        admin.close()
    rows = []
    for tp in tps:
        end = _offset(ends.get(tp))
        done = _offset(committed.get(tp))
        done = max(done, 0) if done is not None else 0
        rows.append(
            {
                "partition": tp.partition,
                "worker": owners.get(tp.partition, ""),
                "committed": done,
                "end": end,
                "lag": max((end or 0) - done, 0),
            }
        )
    return pd.DataFrame(rows, columns=["partition", "worker", "committed", "end", "lag"])


def _offset(value: Any) -> int | None:
    """An offset from kafka-python's answers (OffsetAndTimestamp, OffsetAndMetadata or an int)."""
    if value is None:
        return None
    return int(value if isinstance(value, int) else value.offset)


def shared_dispatch(config: Config) -> bool:
    """Whether this config's workers dispatch through the share group (``Broker.shared_dispatch``:
    asked for, and the broker has share groups), asked with the deadline of :data:`KAFKA_TIMEOUT_MS`
    rather than ``submit_timeout``. No Kafka call for ``dispatch = "partitioned"``. The answer
    does not change while the broker runs: a caller asking often keeps it. Raises
    ServiceUnavailable if Kafka does not answer."""
    from yadtq.transport.broker import Broker

    broker = Broker(config.replace(submit_timeout=KAFKA_TIMEOUT_MS / 1000))
    try:
        return broker.shared_dispatch()
    finally:
        broker.close()


def share_group(config: Config, workers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The share group of shared dispatch, as Kafka and the workers' heartbeats show it: one row
    per running worker and per member Kafka lists (see :func:`share_members` for the columns).

    Group-wide figures are in ``frame.attrs``: ``group`` (its id), ``group_state`` (``Stable``,
    ``Empty``; ``Dead`` when no worker ever joined), ``epoch``, and ``offsets``, one dict per
    partition of the task topic (one, with shared dispatch) with ``partition``, ``end`` (the end
    offset: every task ever sent to it), ``start`` (the group's start offset: every record below it
    is acknowledged; None before the group read any) and ``lag`` (records from ``start`` on not
    acknowledged yet: queued or in flight; None where the broker does not say).
    :func:`share_group_title` puts them in one line. Raises ServiceUnavailable if Kafka does not
    answer a call within :data:`KAFKA_TIMEOUT_MS`."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import OffsetSpec
    from kafka.errors import KafkaError

    from yadtq.core.errors import ServiceUnavailable
    from yadtq.transport.sharegroup import admin as share_admin

    try:
        admin = KafkaAdminClient(
            **config.kafka_options(), request_timeout_ms=KAFKA_TIMEOUT_MS, bootstrap_timeout_ms=KAFKA_TIMEOUT_MS
        )
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka did not answer: {exc}") from None
    try:
        described = share_admin.describe(admin, config.share_group_id)
        topics = admin.describe_topics([config.task_topic])
        numbers = sorted(p["partition_index"] for t in topics for p in t.get("partitions", []))
        tps = [TopicPartition(config.task_topic, n) for n in numbers]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}, timeout_ms=KAFKA_TIMEOUT_MS)
        starts = share_admin.start_offsets(admin, config.share_group_id, config.task_topic) if tps else {}
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka did not answer: {exc}") from None
    finally:
        admin.close()
    frame = share_members(described, workers)
    frame.attrs.update(
        group=config.share_group_id,
        group_state=str(described.get("state") or ""),
        epoch=described.get("epoch"),
        offsets=[
            {
                "partition": tp.partition,
                "end": _offset(ends.get(tp)),
                "start": starts[tp.partition][0] if tp.partition in starts else None,
                "lag": starts[tp.partition][1] if tp.partition in starts and starts[tp.partition][1] >= 0 else None,
            }
            for tp in tps
        ],
    )
    return frame


def share_members(described: dict[str, Any], workers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of :func:`share_group` from a described group (``sharegroup.admin.describe``) and the
    worker records (``client.workers()``): one per running worker and one per member Kafka lists (a
    worker killed stays a member until the group's session timeout; a worker still joining is not
    one yet), in natural order of the names.

    - ``worker``: the worker's name, which is its member's client id;
    - ``state``: the worker's state from its record ("" for a member without one);
    - ``member``: whether Kafka lists it as a member of the share group;
    - ``partitions``: of the task topic, Kafka's assignment for a member (every member gets the one
      partition), else what its heartbeat reported;
    - ``in_flight``: records it holds, acquired and not acknowledged yet, and ``max_delivery_count``:
      the highest delivery count among them (2 or more: handed out before, to a worker that died
      or stalled), both from its last heartbeat; missing for a worker that does not report them
      (partitioned dispatch, or an older worker)."""
    import pandas as pd

    records: dict[str, dict[str, Any]] = {}
    if workers is not None and len(workers):
        for row in workers.to_dict("records"):
            records[str(row["name"])] = row
    members = {str(m["client_id"]): m for m in described.get("members", [])}
    names = {n for n, r in records.items() if r.get("state") in RUNNING_STATES} | set(members)
    rows = []
    for name in sorted(names, key=_natural):
        record = records.get(name, {})
        member = members.get(name)
        parts = (
            ",".join(map(str, member["partitions"]))
            if member
            else ",".join(map(str, sorted(owned(record.get("partitions")))))
        )
        rows.append(
            {
                "worker": name,
                "state": str(record.get("state") or ""),
                "member": member is not None,
                "partitions": parts,
                "in_flight": _count(record.get("in_flight")),
                "max_delivery_count": _count(record.get("max_delivery_count")),
            }
        )
    frame = pd.DataFrame(rows, columns=SHARE_GROUP_COLUMNS)
    for column in ("in_flight", "max_delivery_count"):
        frame[column] = frame[column].astype("Int64")
    frame["member"] = frame["member"].astype(bool)
    return frame


def share_group_title(frame: pd.DataFrame) -> str:
    """One line on the group of a :func:`share_group` frame: its id and state, its members, and
    per partition of the task topic the end offset, the group's start offset and lag."""
    attrs = frame.attrs
    members = int(frame["member"].sum()) if len(frame) else 0
    line = f"Share group {attrs.get('group', '')}: {attrs.get('group_state') or 'unknown'}, {members} member(s)"
    for offsets in attrs.get("offsets", []):
        figures = [f"end offset {_shown(offsets.get('end'))}"]
        if offsets.get("start") is not None:
            figures.append(f"start offset {offsets['start']}")
        if offsets.get("lag") is not None:
            figures.append(f"lag {offsets['lag']}")
        line += f"; partition {offsets['partition']}: " + ", ".join(figures)
    return line


def counts_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its :data:`COUNT_COLUMNS` as text, a missing count as "": for tables shown to
    people, since pandas prints a missing Int64 as ``<NA>`` (and a count among NaNs as 2.0) whatever
    ``na_rep`` says."""
    counts = [column for column in COUNT_COLUMNS if column in frame]
    return frame.assign(**{c: [str(n) if (n := _count(v)) is not None else "" for v in frame[c]] for c in counts})


def _count(value: Any) -> int | None:
    """A count from a worker record's cell: None where the record has none (NaN, NA, None, "")."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def _natural(name: str) -> list[Any]:
    """Sort key comparing digit runs as numbers, so worker-10 comes after worker-9."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]
