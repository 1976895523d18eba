"""Read models for monitoring: counters, filters, throughput, latency, busy spans, failures, partitions.

Every function takes frames the client already returns (``client.tasks()``, ``client.workers()``,
``client.heartbeats()``) and gives back a small DataFrame or dict, so the notebook dashboard, the
terminal ``watch``, the HTML report and the Prometheus exporter all compute the same figures, and
tests check them without a screen. Only :func:`partitions` talks to a service (Kafka), with a deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from yadtq.client import Client
    from yadtq.config import Config

#: The statuses the counters show, in the order a task goes through them.
STATUSES = ("queued", "processing", "retrying", "success", "failed", "cancelled")
#: Statuses after which a task does not change again.
FINISHED = ("success", "failed", "cancelled")
#: End-to-end latency percentiles shown over time.
PERCENTILES = (50, 90, 99)
#: Kafka calls made for the partition table give up after this many milliseconds, so a broker that
#: does not answer slows a redraw down by at most this much.
KAFKA_TIMEOUT_MS = 3000


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

    from yadtq.errors import ServiceUnavailable

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
