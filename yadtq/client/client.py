"""The client: submit tasks, follow them, and read the task and worker tables.

``submit`` checks everything it can before anything is sent (operation name, argument count,
types and limits, message size), so a mistake raises :class:`InvalidTask` and changes nothing.
Then it records the task as ``queued`` in Redis and sends it to Kafka, waiting for the broker's
acknowledgement; if Kafka does not acknowledge in time the record is taken back and
:class:`ServiceUnavailable` raised, so a caller never has to wonder about a half-submitted task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from yadtq.client.outbox import Outbox
from yadtq.core.config import Config
from yadtq.core.errors import (
    AmbiguousTask,
    BadArguments,
    NotCancellable,
    ServiceUnavailable,
    TaskFailed,
    TaskTimeout,
    UnknownTask,
)
from yadtq.core.ops import load_imports, registry
from yadtq.core.task import TaskMessage, TaskStatus, json_safe
from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker

if TYPE_CHECKING:
    import pandas as pd

    from yadtq.worker.history import Replay

#: The most task outcomes :meth:`Client.gather` reads in one Redis round trip.
GATHER_BATCH = 500

TASK_COLUMNS = [
    "id",
    "op",
    "args",
    "kwargs",
    "status",
    "result",
    "error",
    "reason",
    "worker",
    "attempts",
    "submitted_at",
    "started_at",
    "finished_at",
]
WORKER_COLUMNS = [
    "name",
    "pid",
    "host",
    "state",
    "current_task",
    "processed",
    "failed",
    "lost",
    "partitions",
    "rebalances",
    "in_flight",
    "max_delivery_count",
    "last_heartbeat",
    "started_at",
]
log = logging.getLogger(__name__)
MAX_TIME_LIMIT = 24 * 3600.0
#: A fast submit that Kafka has neither acknowledged nor refused this long after its
#: ``submit_timeout`` is withdrawn by the client's watch thread, asked or not (kafka-python's
#: producer can leave a send unanswered for good after the broker is SIGKILLed).
OVERDUE_AFTER = 5.0
#: Worker states (as ``Client.workers`` shows them) of a worker that is not running any more.
GONE_STATES = frozenset({"stopped", "dead", "unresponsive"})
#: The error for an ambiguous id prefix lists at most this many of its matches.
SHOWN_MATCHES = 5


class TaskHandle:
    """A submitted task, by id; cheap to make for any id (``client.handle(task_id)``)."""

    def __init__(self, client: Client, task_id: str, sent: Any = None) -> None:
        self.client = client
        self.id = task_id
        self._sent = sent  # Kafka's future of a fast submit; None once known acknowledged

    def accepted(self, timeout: float | None = None) -> bool:
        """Wait until Kafka has acknowledged the task (at once after a waiting submit): True, or
        ServiceUnavailable if it refused it, in which case the task has no record and never runs."""
        if self._sent is not None:
            try:
                self.client.broker.acknowledged(self._sent, timeout)
            except ServiceUnavailable:
                if self.client._withdraw(self.id):
                    raise
            self._sent = None  # acknowledged, or a worker already has it
        return True

    def status(self) -> TaskStatus:
        return self.client.status(self.id)

    def info(self) -> dict[str, Any] | None:
        return self.client.task(self.id)

    def history(self) -> list[dict[str, Any]]:
        return self.client.history(self.id)

    def result(self, timeout: float = 30.0) -> Any:
        return self.client.result(self.id, timeout)

    def cancel(self) -> TaskStatus:
        return self.client.cancel(self.id)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"


class Client:
    def __init__(self, config: Config | None = None, **settings: Any) -> None:
        self.config = config.replace(**settings) if config else Config.from_env(**settings)
        load_imports(self.config.imports)
        self.backend = Backend(self.config)
        self.broker = Broker(self.config)
        self.outbox = Outbox(self.backend, self.config.submit_timeout)
        # (task id, Kafka future, monotonic send time) of fast submits, oldest first
        self._unacked: deque[tuple[str, Any, float]] = deque()
        self._unacked_lock = threading.Lock()
        self._refused: dict[str, str] = {}  # task id -> why Kafka did not take it
        self._watch: threading.Thread | None = None
        self._closing = threading.Event()

    # --- submitting --------------------------------------------------------------------------
    def submit(self, op: str, *args: Any, **kwargs: Any) -> TaskHandle:
        """Submit ``op(*args, **kwargs)`` with the default options."""
        return self.submit_with(op, args, kwargs)

    def submit_with(
        self,
        op: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        time_limit: float | None = None,
        retry_errors: bool = False,
        wait: bool | None = None,
    ) -> TaskHandle:
        """Submit with options: retries for infrastructure failures, a time limit in seconds, and
        whether errors of the operation itself (and timeouts) are retried too.

        With ``wait`` (default: the ``submit_wait`` setting, off) this returns once Kafka has
        acknowledged the message, and raises ServiceUnavailable (leaving no record) if it does not.
        Without it, the message goes into the producer's batch and this returns at once, about ten
        times faster; ``handle.accepted()`` or ``client.flush()`` then say whether Kafka took it, and
        a message it refused leaves no ``queued`` record behind (see ``outbox.py``)."""
        msg = self.build(op, args, kwargs, max_retries=max_retries, time_limit=time_limit, retry_errors=retry_errors)
        self.broker.ensure_topics()
        if not (self.config.submit_wait if wait is None else wait):
            future = self.broker.send(msg.encode(), key=msg.id)
            self.outbox.record(msg)
            future.add_errback(self._refused_by_kafka, msg.id)
            with self._unacked_lock:  # the watch thread forgets the acknowledged ones every second
                self._unacked.append((msg.id, future, time.monotonic()))
            if self._watch is None:
                self._watch = threading.Thread(target=self._watch_overdue, name="yadtq-overdue", daemon=True)
                self._watch.start()
            return TaskHandle(self, msg.id, future)
        self.backend.submit(msg)
        try:
            self.broker.publish(msg.encode(), key=msg.id)
        except ServiceUnavailable:
            try:
                self.backend.unsubmit(msg.id)
            except ServiceUnavailable:
                pass
            raise
        return TaskHandle(self, msg.id)

    def flush(self) -> None:
        """Wait until every task submitted so far is acknowledged by Kafka and recorded in Redis;
        ServiceUnavailable names the ones Kafka refused (their records are gone, so resubmit them)."""
        try:
            self.broker.flush()
        except ServiceUnavailable:
            pass  # judged message by message below
        with self._unacked_lock:
            pending, self._unacked = self._unacked, deque()
        refused = [task_id for task_id, future, _ in pending if future.failed()]
        unanswered = [task_id for task_id, future, _ in pending if not future.is_done]
        self.outbox.flush()
        refused += [task_id for task_id in unanswered if self._withdraw(task_id)]
        if refused:
            raise ServiceUnavailable(f"Kafka did not accept {len(refused)} task(s): {', '.join(refused[:5])}")

    def _withdraw(self, task_id: str) -> bool:
        """Kafka gave no answer in time: take the task back so that it never runs, even if its
        message arrives later (the claim skips a withdrawn id). True if withdrawn; False if a worker
        already has it, i.e. the message did get through."""
        self.outbox.flush()
        self.backend.unsubmit(task_id)
        withdrawn = self.backend.task(task_id) is None
        if withdrawn:
            self._refused[task_id] = "no answer from Kafka in time; withdrawn"
        return withdrawn

    def _refused_by_kafka(self, task_id: str, exc: Exception) -> None:
        """(Producer thread.) The message will never be delivered: take its record back, and remember
        why, so that waiting for this task says so rather than 'unknown'."""
        self._refused[task_id] = f"{type(exc).__name__}: {exc}"
        self.outbox.take_back(task_id)

    def _watch_overdue(self) -> None:
        """(Its own thread.) Withdraw fast submits that Kafka left unanswered well past their
        timeout, so that a program that never calls ``accepted`` or ``flush`` leaves no ``queued``
        record behind a message that never arrived; the acknowledged ones are forgotten."""
        while not self._closing.wait(1.0):
            limit = time.monotonic() - self.config.submit_timeout - OVERDUE_AFTER
            with self._unacked_lock:
                overdue = [u for u in self._unacked if not u[1].is_done and u[2] < limit]
                kept = (u for u in self._unacked if u[1].failed() or (not u[1].is_done and u[2] >= limit))
                self._unacked = deque(kept)  # failed ones stay for flush() to name
            for task_id, future, sent in overdue:
                try:
                    self._withdraw(task_id)
                except ServiceUnavailable:  # Redis is away too: try again next round
                    with self._unacked_lock:
                        self._unacked.appendleft((task_id, future, sent))

    def build(
        self, op: str, args: list[Any] | tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> TaskMessage:
        """The message ``submit_with`` would send, after every check; raises InvalidTask."""
        args, kwargs = list(args), dict(kwargs or {})
        operation = registry.get(op)
        if not json_safe(args) or not json_safe(kwargs):
            raise BadArguments(f"{op}: arguments must be JSON values (numbers, strings, lists, objects)")
        operation.check(args, kwargs)
        max_retries, time_limit = options.get("max_retries"), options.get("time_limit")
        if max_retries is not None and (
            not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
        ):
            raise BadArguments("max_retries must be a whole number >= 0")
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and 0 < time_limit <= MAX_TIME_LIMIT):
            raise BadArguments(f"time_limit must be a number of seconds in (0, {MAX_TIME_LIMIT:g}]")
        seconds = operation.seconds(args, kwargs)
        limit = self.config.time_limit if time_limit is None else time_limit
        if seconds is not None and seconds >= limit:
            # it would only be killed at its time limit, after holding a worker that long
            raise BadArguments(
                f"{op}: {operation.duration}={seconds:g} does not fit the time limit of {limit:g}s; "
                "ask for a longer time_limit (--time-limit)"
            )
        msg = TaskMessage(
            op=op,
            args=args,
            kwargs=kwargs,
            max_retries=max_retries,
            time_limit=time_limit,
            retry_errors=bool(options.get("retry_errors", False)),
        )
        try:
            size = len(msg.encode())
        except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit conversion limit
            raise BadArguments(f"{op}: arguments cannot be written as JSON: {exc}") from None
        if size > self.config.max_message_bytes:
            raise BadArguments(f"task message is {size} bytes; the limit is {self.config.max_message_bytes}")
        return msg

    # --- following ---------------------------------------------------------------------------
    def handle(self, task_id: str) -> TaskHandle:
        return TaskHandle(self, task_id)

    def resolve(self, prefix: str) -> str:
        """The full id of the one task whose id starts with ``prefix`` (people type the first few
        characters, as the demo prints them). Raises UnknownTask if none matches, AmbiguousTask
        (listing them) if several do. A full id is found without scanning the index."""
        if not prefix or len(prefix) > 64 or not prefix.isascii() or not prefix.isprintable():
            raise UnknownTask(f"{prefix!r} is not a task id: ids are 1-64 printable ASCII characters")
        if self.task(prefix) is not None:
            return prefix
        matches = self.backend.task_ids(prefix)
        if not matches:
            raise UnknownTask(f"no task with an id starting {prefix!r} (never submitted, or expired)")
        if len(matches) > 1:
            shown = ", ".join(matches[:SHOWN_MATCHES]) + (" ..." if len(matches) > SHOWN_MATCHES else "")
            raise AmbiguousTask(f"{prefix!r} matches {len(matches)} tasks: {shown}; type more of the id")
        return matches[0]

    def status(self, task_id: str) -> TaskStatus:
        record = self.task(task_id)
        return TaskStatus(record["status"]) if record else TaskStatus.UNKNOWN

    def task(self, task_id: str) -> dict[str, Any] | None:
        self.outbox.flush()  # see our own submits
        return self.backend.task(task_id)

    def result(self, task_id: str, timeout: float = 30.0) -> Any:
        """The task's result; raises TaskFailed if it failed or was cancelled, TaskTimeout if it is
        not done within ``timeout`` seconds (the task itself goes on), and UnknownTask at once for
        an id with no record: ``submit`` writes the record before it returns, so waiting would not
        make one appear. (A task that another producer sent without writing its record, see
        docs/protocol.md, is unknown until a worker picks it up.)"""
        return self.gather([task_id], timeout)[0]

    def gather(self, tasks: Iterable[TaskHandle | str], timeout: float = 30.0) -> list[Any]:
        """Every task's result, in the order given: what ``[client.result(t) for t in tasks]`` gives,
        raising what it would raise where it would (``timeout`` is for all of them together).

        The difference is the cost. While the tasks come back finished, each Redis round trip reads
        the outcomes of twice as many as the last one did (up to GATHER_BATCH), so collecting the
        results of a batch that is done costs a few round trips, not one per task; at an
        unfinished task it sleeps on that task's completion signal and starts again from one.
        """
        ids = [t if isinstance(t, str) else t.id for t in tasks]
        deadline = time.monotonic() + timeout
        self.outbox.flush()  # see our own submits
        results: list[Any] = []
        final: dict[int, tuple[TaskStatus, Any, str]] = {}  # read ahead; a final outcome never changes
        window = 1
        while len(results) < len(ids):
            first = len(results)
            unread = [i for i in range(first, min(len(ids), first + window)) if i not in final]
            fresh = dict(zip(unread, self.backend.outcomes([ids[i] for i in unread]), strict=True))
            final.update((i, o) for i, o in fresh.items() if o is not None and o[0].terminal)
            while len(results) in final:
                results.append(self._settled(ids[len(results)], final.pop(len(results))))
            window = min(GATHER_BATCH, 2 * (len(results) - first) + 1)
            if len(results) == len(ids) or len(results) not in fresh:
                continue  # done, or every task read was final: read on
            task_id, outcome = ids[len(results)], fresh[len(results)]
            if outcome is None:
                if task_id in self._refused:
                    raise ServiceUnavailable(f"Kafka did not accept task {task_id}: {self._refused[task_id]}")
                raise UnknownTask(f"no task with id {task_id!r} (never submitted, or expired)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskTimeout(f"task {task_id} is still {outcome[0].value} after {timeout:g}s")
            self.backend.wait_done(task_id, left)
        return results

    @staticmethod
    def _settled(task_id: str, outcome: tuple[TaskStatus, Any, str]) -> Any:
        status, result, error = outcome
        if status is TaskStatus.SUCCESS:
            return result
        raise TaskFailed(task_id, status.value, error)

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """Every status change ``{status, at, worker, attempt, note}``, oldest first. A ``retrying``
        step's note is its error; the final ``failed`` step records only the reason, because the
        error is stored on the task, so here its note gets the error too ("error: ZeroDivisionError:
        ...") and the story reads whole."""
        self.outbox.flush()
        entries = self.backend.history(task_id)
        if entries and entries[-1]["status"] == TaskStatus.FAILED.value:
            error = (self.backend.task(task_id) or {}).get("error")
            if error:
                note = entries[-1].get("note")
                entries[-1]["note"] = f"{note}: {error}" if note else error
        return entries

    def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a task that has not started; raises NotCancellable otherwise."""
        self.outbox.flush()
        outcome = self.backend.cancel(task_id)
        if outcome != TaskStatus.CANCELLED.value:
            raise NotCancellable(f"task {task_id} is {outcome}; only queued or retrying tasks can be cancelled")
        return TaskStatus.CANCELLED

    # --- tables --------------------------------------------------------------------------------
    def tasks(self, limit: int = 100) -> pd.DataFrame:
        """The newest ``limit`` tasks, newest first."""
        self.outbox.flush()
        return _frame(self.backend.tasks(limit), TASK_COLUMNS, ("submitted_at", "started_at", "finished_at"))

    def workers(self, live_only: bool = False) -> pd.DataFrame:
        """The workers of this namespace, or only the live ones; ``state`` says ``unresponsive`` for
        a worker whose heartbeat is late but that no live worker has declared dead yet.

        Reading the table first removes the records of workers gone for longer than
        ``worker_retention``. It happens here rather than in the workers because the table is where
        old records get in the way, and it must happen even when no worker runs; every front end
        (CLI, dashboard, notebook) reads through here, so they all show the same workers."""
        now = time.time()
        self.backend.prune_workers(before=now - self.config.worker_retention)
        rows = [{**row, "state": self._state(row, now)} for row in self.backend.workers()]
        if live_only:
            rows = [row for row in rows if row["state"] not in GONE_STATES]
        return _frame(rows, WORKER_COLUMNS, ("last_heartbeat", "started_at"))

    def live_workers(self) -> int:
        """How many workers are running: heartbeat within ``heartbeat_timeout``, neither stopped
        nor dead. Cheap (no table), so a submit can say when nothing will pick its task up."""
        now = time.time()
        rows = self.backend.workers(since=now - self.config.heartbeat_timeout)
        return sum(self._state(row, now) not in GONE_STATES for row in rows)

    def _state(self, row: dict[str, Any], now: float) -> str:
        """A worker's state as the tables show it, judged by its heartbeat as well as its record."""
        state = str(row.get("state") or "")
        late = now - (row.get("last_heartbeat") or 0) > self.config.heartbeat_timeout
        if state in ("idle", "busy", "starting") and late:
            return "unresponsive"
        if state == "idle" and not row.get("partitions"):
            return "idle (no partition)"  # a busy worker hands its partitions over: see transport/assignor.py
        return state

    def heartbeats(self, worker: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Heartbeat history (worker, at, state, task), oldest first: the timeline of the workers."""
        import pandas as pd

        names = [worker] if worker else [w["name"] for w in self.backend.workers()]
        rows = [{"worker": name, **beat} for name in names for beat in self.backend.beats(name, limit)]
        frame = pd.DataFrame(rows, columns=["worker", "at", "state", "task"])
        frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
        return frame.sort_values("at", ignore_index=True)

    def dead_letters(self, limit: int = 100) -> pd.DataFrame:
        return _frame(
            self.backend.dead_letters(limit),
            ["at", "reason", "task_id", "worker", "partition", "offset", "deliveries", "preview"],
            ("at",),
        )

    # --- monitoring: history from Kafka and per-task logs (yadtq/worker/history.py, yadtq/worker/logs.py) ------
    def replay(self, since: float | None = None, timeout: float = 30.0) -> Replay:
        """Task and worker timelines rebuilt from the Kafka event log alone (survives a Redis loss)."""
        from yadtq.worker.history import replay

        return replay(self.config, since=since, timeout=timeout)

    def logs(self, task_id: str) -> list[dict[str, Any]]:
        """The task's log lines from every worker and attempt, oldest first."""
        from yadtq.worker.logs import task_logs

        return task_logs(self.config, task_id)

    def close(self) -> None:
        """Send what the producer holds (within its timeout); a fast submit still unanswered then is
        withdrawn, as ``flush`` would, so closing never leaves a record behind a lost message."""
        self._closing.set()
        if self._watch is not None:
            self._watch.join(timeout=self.config.submit_timeout + 5)
        self.broker.close()
        with self._unacked_lock:
            unanswered = [task_id for task_id, future, _ in self._unacked if not future.is_done]
        for task_id in unanswered:
            try:
                self._withdraw(task_id)
            except ServiceUnavailable as exc:
                log.warning("task %s: Kafka never answered, and it could not be withdrawn: %s", task_id, exc)
        self.outbox.close()
        self.backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame(rows: list[dict[str, Any]], columns: list[str], times: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for name in ("args", "kwargs", "result"):  # JSON values: keep 5 as 5, not 5.0
        if name in frame:
            frame[name] = pd.Series([row.get(name) for row in rows], dtype=object)
    for name in times:
        frame[name] = pd.to_datetime(frame[name], unit="s", utc=True)
    return frame
