"""History that survives restarts: lifecycle events in the Kafka topic ``NS.events``, and replay.

Redis holds the present (and forgets finished tasks after ``result_ttl``, or everything after a
flush); Kafka keeps a log. Workers publish every claim, outcome, heartbeat, start and stop to
``NS.events`` through :class:`EventLog` (a hook on a background thread: a worker never waits for
it, and a failed publish is logged, never raised). :func:`replay` reads that topic, plus the task
topic for when each task was submitted, and rebuilds the task and worker timelines as DataFrames,
with nothing from Redis, so it works after every process, Redis included, has restarted.

A worker declared dead is not an event a worker publishes about itself: replay infers it from a
worker whose heartbeats stop without a ``stopped`` event (``state`` ``dead``; its ``last_heartbeat``
is when it went silent). A worker killed with SIGKILL loses the records it had not sent yet (a
tenth of a second's worth, see ``AsyncSink.linger``); the worker that runs its task next publishes
that task's later steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yadtq.worker.sink import AsyncSink

if TYPE_CHECKING:
    import pandas as pd

    from yadtq.core.config import Config
    from yadtq.core.task import TaskMessage
    from yadtq.worker.events import WorkerView
    from yadtq.worker.executor import Outcome

#: Replay reads at most this long before it returns what it has (and says it stopped early).
REPLAY_TIMEOUT = 30.0


class EventLog(AsyncSink):
    """The worker hook that publishes lifecycle events to ``NS.events`` (JSON arrays of events,
    keyed by worker)."""

    name = "event-log"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._producer: Any = None

    # --- hook steps ----------------------------------------------------------------------------
    def worker_started(self, worker: WorkerView) -> None:
        self._event(worker, type="worker", state="started", pid=_pid())

    def worker_stopped(self, worker: WorkerView) -> None:
        self._event(worker, type="worker", state="stopped")
        self.drain()

    def task_claimed(self, worker: WorkerView, msg: TaskMessage, attempt: int) -> None:
        self._event(worker, type="task", id=msg.id, op=msg.op, status="processing", attempt=attempt)

    def task_finished(self, worker: WorkerView, msg: TaskMessage, status: str, outcome: Outcome) -> None:
        self._event(
            worker,
            type="task",
            id=msg.id,
            op=msg.op,
            status=status,
            error=outcome.error or None,
            duration=round(outcome.duration, 6),
        )

    def task_skipped(self, worker: WorkerView, msg: TaskMessage, why: str) -> None:
        self._event(worker, type="skip", id=msg.id, op=msg.op, note=why)

    def dead_lettered(self, worker: WorkerView, record: dict[str, Any]) -> None:
        self._event(worker, **{**record, "type": "dead_letter"})

    def heartbeat(self, worker: WorkerView) -> None:
        tasks = ",".join(m.id for m in worker.current)
        self._event(worker, type="heartbeat", state=worker.state, task=tasks)

    def _event(self, worker: WorkerView, **fields: Any) -> None:
        self.put({"at": time.time(), "worker": worker.name, **fields})

    # --- the sink (its own thread) ---------------------------------------------------------------
    def open_sink(self) -> None:
        from kafka import KafkaProducer

        ensure_topic(self.config)
        self._producer = KafkaProducer(**self.config.kafka_options(), acks="all", max_block_ms=5000)

    def write(self, batch: list[dict[str, Any]]) -> None:
        """One Kafka record per batch, a JSON array of events: a send costs this thread about as
        much CPU as the worker spends on a quick task, so one per event would halve its rate."""
        if self._producer is None:
            self.open_sink()
        data = json.dumps(batch, separators=(",", ":"), default=str).encode()
        self._producer.send(self.config.events_topic, data, key=batch[0]["worker"].encode())

    def close_sink(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=5)
            self._producer.close(timeout=5)


def ensure_topic(config: Config) -> None:
    """Create ``NS.events`` with one partition (so replay reads one ordered log) if it is missing."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**config.kafka_options(), request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    try:
        if config.events_topic not in admin.list_topics():
            admin.create_topics([NewTopic(config.events_topic, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def _pid() -> int:
    import os

    return os.getpid()


# --- replay ------------------------------------------------------------------------------------
@dataclass
class Replay:
    """What the Kafka log says happened: ``tasks`` (one row per task), ``workers`` (one row per
    worker), ``beats`` (the heartbeat timeline, as ``client.heartbeats()``) and every ``events`` row.
    ``complete`` is False when reading stopped at the deadline before the end of a topic."""

    tasks: pd.DataFrame
    workers: pd.DataFrame
    beats: pd.DataFrame
    events: pd.DataFrame
    complete: bool


def read_topic(config: Config, topic: str, since: float | None, timeout: float) -> tuple[list[Any], bool]:
    """Every record of ``topic`` from ``since`` (Unix time; None: the beginning) to its end offsets
    at the time of the call, without a consumer group; (records, reached the end in time)."""
    from kafka import KafkaConsumer, TopicPartition

    deadline = time.monotonic() + timeout
    consumer = KafkaConsumer(**config.kafka_options(), enable_auto_commit=False, request_timeout_ms=10_000)
    try:
        numbers = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, n) for n in sorted(numbers)]
        if not tps:
            return [], True
        consumer.assign(tps)
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout * 1000))
        if since is None:
            consumer.seek_to_beginning(*tps)
        else:
            starts = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            for tp in tps:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        records: list[Any] = []
        left = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        while left and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=200).items():
                records.extend(r for r in batch if r.offset < ends[tp])
            left = {tp for tp in left if consumer.position(tp) < ends[tp]}
        return records, not left
    finally:
        consumer.close()


def replay(config: Config, since: float | None = None, timeout: float = REPLAY_TIMEOUT) -> Replay:
    """Rebuild the timelines from Kafka alone (``NS.events`` and ``NS.tasks``), from ``since`` (Unix
    time) on; ``timeout`` bounds the whole read."""
    deadline = time.monotonic() + timeout
    raw, events_done = read_topic(config, config.events_topic, since, timeout)
    submitted, tasks_done = read_topic(config, config.task_topic, since, max(deadline - time.monotonic(), 1.0))
    events = [event for r in raw for event in _events(r.value)]
    submits = [_submit(r) for r in submitted]
    return Replay(
        tasks=_tasks(events, [s for s in submits if s]),
        workers=_workers(events, config.heartbeat_timeout),
        beats=_beats(events),
        events=_events_frame(events),
        complete=events_done and tasks_done,
    )


def _events(value: bytes) -> list[dict[str, Any]]:
    """The events of one record: a batch (a JSON array), or one event as older workers wrote."""
    decoded = json.loads(value)
    return decoded if isinstance(decoded, list) else [decoded]


def _submit(record: Any) -> dict[str, Any] | None:
    """The id, operation and submit time of a task message (Kafka's timestamp); None if not ours."""
    try:
        msg = json.loads(record.value)
        return {"id": msg["id"], "op": msg["op"], "args": msg.get("args"), "at": record.timestamp / 1000}
    except (ValueError, KeyError, TypeError):
        return None


TASK_COLUMNS = [
    "id",
    "op",
    "args",
    "status",
    "worker",
    "attempts",
    "error",
    "submitted_at",
    "started_at",
    "finished_at",
]
WORKER_COLUMNS = ["name", "state", "started_at", "stopped_at", "last_heartbeat", "processed", "failed"]


def _tasks(events: list[dict[str, Any]], submits: list[dict[str, Any]]) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {}
    for s in submits:  # a retry is published to the task topic again: the first one is the submit
        rows.setdefault(s["id"], {"id": s["id"], "op": s["op"], "args": s["args"], "status": "queued"})
        rows[s["id"]].setdefault("submitted_at", s["at"])
    for e in events:
        if e.get("type") != "task":
            continue
        row = rows.setdefault(e["id"], {"id": e["id"], "op": e.get("op"), "status": "queued"})
        row.update(status=e["status"], worker=e.get("worker"))
        if e["status"] == "processing":
            row.setdefault("started_at", e["at"])
            row["attempts"] = max(row.get("attempts") or 0, e.get("attempt") or 1)
        else:
            row["finished_at"], row["error"] = e["at"], e.get("error")
    return _frame(list(rows.values()), TASK_COLUMNS, ("submitted_at", "started_at", "finished_at"))


def _workers(events: list[dict[str, Any]], heartbeat_timeout: float) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {}
    end = max((e["at"] for e in events), default=time.time())
    for e in events:
        name = e.get("worker")
        if not name:
            continue
        row = rows.setdefault(name, {"name": name, "processed": 0, "failed": 0, "state": "started"})
        if e["type"] == "worker":
            row["state"] = e["state"]
            row["started_at" if e["state"] == "started" else "stopped_at"] = e["at"]
        elif e["type"] == "heartbeat":
            row["last_heartbeat"] = e["at"]
        elif e["type"] == "task" and e["status"] != "processing":
            row["processed"] += 1
            row["failed"] += e["status"] == "failed"
    now = time.time()
    for row in rows.values():
        last = row.get("last_heartbeat") or row.get("started_at") or 0
        if row["state"] != "stopped" and max(now, end) - last > heartbeat_timeout:
            row["state"] = "dead"  # silent without a stop: killed, or its host went away
    return _frame(list(rows.values()), WORKER_COLUMNS, ("started_at", "stopped_at", "last_heartbeat"))


def _beats(events: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {"worker": e["worker"], "at": e["at"], "state": e.get("state"), "task": e.get("task", "")}
        for e in events
        if e.get("type") == "heartbeat" or (e.get("type") == "worker" and e.get("state") == "stopped")
    ]
    return _frame(rows, ["worker", "at", "state", "task"], ("at",)).sort_values("at", ignore_index=True)


def _events_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    return _frame(events, ["at", "type", "worker", "id", "op", "status", "state", "attempt", "error"], ("at",))


def _frame(rows: list[dict[str, Any]], columns: list[str], times: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for name in times:
        frame[name] = pd.to_datetime(frame[name], unit="s", utc=True)
    return frame
