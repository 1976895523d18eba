"""Redis, the only door to it: task state, results, heartbeats and dead letters.

Redis is the source of truth for *what happened to a task*; Kafka is the source of truth for *what
was asked*. Writes go through the atomic scripts in :mod:`yadtq.store.scripts`; this class gives them
names and types. Every method turns a lost connection into :class:`ServiceUnavailable`, so callers
see one error whatever redis-py raised.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable
from yadtq.core.task import TaskMessage, TaskStatus
from yadtq.store.keys import Keys
from yadtq.store.scripts import SCRIPTS

F = TypeVar("F", bound=Callable[..., Any])

#: Characters special in a Redis MATCH pattern, escaped so that a task id prefix matches only itself.
_GLOB = re.compile(r"[\\*?\[\]]")
#: Dead-letter records kept in Redis (the topic keeps them all).
DEAD_LETTER_HISTORY = 10_000
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


def guarded(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Backend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except REDIS_ERRORS as exc:
            raise ServiceUnavailable(f"Redis at {self.config.redis_url} is unavailable: {exc}") from None

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Claim:
    """What :meth:`Backend.claim` decided: run it (``claimed``), or skip it and say why."""

    outcome: str  # claimed | done | busy | gave_up
    detail: str  # the attempt number, the final status, or the worker that holds it

    @property
    def attempt(self) -> int:
        return int(self.detail) if self.outcome == "claimed" else 0


@dataclass(frozen=True)
class Settlement:
    """One outcome as a worker stores it: ``status`` SUCCESS or FAILED finishes the task, RETRYING
    schedules another attempt after ``delay`` seconds, QUEUED hands it back (``error`` is the note)."""

    task_id: str
    attempt: int
    status: TaskStatus
    result: Any = None
    error: str = ""
    reason: str = ""
    delay: float = 0.0


class Backend:
    def __init__(self, config: Config, client: redis.Redis | None = None) -> None:
        self.config = config
        self.keys = Keys(config.namespace)
        self.ns = config.namespace
        self.redis: redis.Redis = client or redis.Redis.from_url(
            config.redis_url,
            password=config.redis_password or None,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=5,
        )
        self._scripts = {name: self.redis.register_script(src) for name, src in SCRIPTS.items()}
        self._loaded = False
        self._own = threading.local()  # each thread's connection for round trips (see _connection)
        self._owned: list[tuple[threading.Thread, redis.connection.AbstractConnection]] = []
        self._owned_lock = threading.Lock()
        self._closes = 0  # a connection made before the last close() is not used again

    def _run(self, script: str, *argv: Any) -> Any:
        return self._scripts[script](args=[self.ns, *argv])

    def _pipeline(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Run many scripts in one round trip, by their SHA.

        redis-py's pipeline asks ``SCRIPT EXISTS`` before every execute when scripts are in it: a
        second round trip, a seventh of a busy worker's time. Here the scripts are loaded once, and
        only the calls that came back NOSCRIPT (Redis restarted and forgot them; each had no effect)
        are sent again after loading them.
        """
        if not calls:
            return []
        replies = self._send(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:
            self._load_scripts()
            for i, reply in zip(missing, self._send([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _send(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        if not self._loaded:
            self._load_scripts()
        return self._round_trip([("EVALSHA", self._scripts[name].sha, 0, self.ns, *argv) for name, argv in calls])

    def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands written at once on this thread's connection, their replies read in order (an
        error reply comes back as its exception).

        This is what redis-py's pipeline does, without its per-execute bookkeeping, which cost a
        busy worker 11-16% of its CPU: it makes one round trip per task (docs/performance.md). No
        silent resend after a lost connection either: a script may or may not have run, so the
        caller decides (the runner retries through ``persist``).
        """
        conn = self._connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()  # replies left unread must not reach the next round trip; it reconnects
            raise

    def _connection(self) -> redis.connection.AbstractConnection:
        """The calling thread's own connection, made on its first round trip.

        Not a checkout from the pool: for each one redis-py's pool takes a lock, polls the socket
        for stray data and updates its metrics, twice, which was 8% of a busy worker's CPU. A
        thread's round trips never overlap, so one connection each is safe; a forked child (which
        must not share its parent's socket) makes its own. The connections of threads that have
        ended are closed when the next one is made, so they are never more than the live threads.
        """
        mine = (os.getpid(), self._closes)
        owned = getattr(self._own, "conn", None)
        if owned is not None and owned[0] == mine:
            return owned[1]
        conn = self.redis.connection_pool.make_connection()
        ended: list[redis.connection.AbstractConnection] = []
        with self._owned_lock:
            # one look at each thread: asking twice, a thread ending in between would be in neither list
            kept = [(threading.current_thread(), conn)]
            for thread, other in self._owned:
                if thread.is_alive():
                    kept.append((thread, other))
                else:
                    ended.append(other)
            self._owned = kept
        for old in ended:
            old.disconnect()
        self._own.conn = (mine, conn)
        return conn

    def _load_scripts(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        pipe.execute()
        self._loaded = True

    def close(self) -> None:
        with self._owned_lock:
            owned, self._owned = self._owned, []
            self._closes += 1
        for _, conn in owned:
            conn.disconnect()
        self.redis.close()

    # --- task life cycle (writes) ------------------------------------------------------------
    @guarded
    def ping(self) -> None:
        self.redis.ping()

    @guarded
    def submit(self, msg: TaskMessage) -> bool:
        """Record a task as queued; False if a worker already recorded it (it was that fast)."""
        return bool(self._run("submit", *self._fields(msg), time.time()))

    @guarded
    def record(self, batch: list[TaskMessage | str]) -> None:
        """Write many ``queued`` records (a message) and take-backs (an id) in one pipeline, in order."""
        now = time.time()
        self._pipeline(
            [
                ("submit", [*self._fields(item), now]) if isinstance(item, TaskMessage) else ("unsubmit", [item])
                for item in batch
            ]
        )

    @guarded
    def unsubmit(self, task_id: str) -> bool:
        """Take back the record of a task whose message never reached Kafka."""
        return bool(self._run("unsubmit", task_id))

    @guarded
    def claim(self, msg: TaskMessage, worker: str, mode: str = "") -> Claim:
        """Atomically take a task for ``worker``, or learn why not (see scripts.CLAIM)."""
        outcome, detail = self._run("claim", *self._claim_args(msg, worker, mode))
        return Claim(outcome, str(detail))

    @guarded
    def exchange(
        self, worker: str, settlements: list[Settlement], claims: list[TaskMessage], mode: str = ""
    ) -> tuple[list[bool], list[Claim]]:
        """Store outcomes and claim the next tasks in one round trip (a pipeline of the same atomic
        scripts): a busy worker pays one Redis round trip per batch, not two per task.
        Returns, in order, whether each outcome was stored and each claim's decision."""
        calls = [self._settle_args(worker, settlement) for settlement in settlements]
        calls += [("claim", self._claim_args(msg, worker, mode)) for msg in claims]
        replies = self._pipeline(calls)
        stored = [bool(r) for r in replies[: len(settlements)]]
        decided = [Claim(outcome, str(detail)) for outcome, detail in replies[len(settlements) :]]
        return stored, decided

    def finish(
        self,
        task_id: str,
        worker: str,
        attempt: int,
        status: TaskStatus,
        result: Any = None,
        error: str = "",
        reason: str = "",
    ) -> bool:
        """Store the outcome; False when this worker no longer holds the attempt (it was reassigned)."""
        return self.settle(worker, Settlement(task_id, attempt, status, result, error, reason))

    def retry(self, task_id: str, worker: str, attempt: int, delay: float, error: str, reason: str) -> bool:
        return self.settle(worker, Settlement(task_id, attempt, TaskStatus.RETRYING, None, error, reason, delay))

    def release(self, task_id: str, worker: str, attempt: int, note: str) -> bool:
        """Hand a task back to the queue (graceful shutdown); Kafka redelivers its message."""
        return self.settle(worker, Settlement(task_id, attempt, TaskStatus.QUEUED, error=note))

    @guarded
    def settle(self, worker: str, settlement: Settlement) -> bool:
        name, argv = self._settle_args(worker, settlement)
        return bool(self._run(name, *argv))

    @guarded
    def cancel(self, task_id: str) -> str:
        return str(self._run("cancel", task_id, time.time()))

    @guarded
    def reject(self, task_id: str, op: str, error: str, message: str) -> bool:
        """Mark a task whose message was dead-lettered as failed, so its status answers why."""
        return bool(self._run("reject", task_id, op, error, time.time(), message))

    @guarded
    def dead_letter(self, record: dict[str, Any]) -> bool:
        """Record a dead letter once per message: False if this partition and offset already were
        (a rebalance can hand an uncommitted bad message to a second worker)."""
        seen = f"{self.ns}:dead-lettered:{record['partition']}:{record['offset']}"
        if not self.redis.set(seen, record.get("worker") or "", nx=True, ex=max(self.config.result_ttl, 86_400)):
            return False
        payload = json.dumps(record)
        pipe = self.redis.pipeline()
        pipe.lpush(self.keys.dead_letters, payload)
        pipe.ltrim(self.keys.dead_letters, 0, DEAD_LETTER_HISTORY - 1)
        pipe.publish(self.keys.events, json.dumps({"type": "dead_letter", **record}))
        pipe.execute()
        return True

    # --- workers -----------------------------------------------------------------------------
    @guarded
    def heartbeat(
        self,
        name: str,
        state: str,
        current_task: str,
        pid: int,
        host: str,
        partitions: str,
        started_at: float,
        rebalances: int = 0,
        in_flight: int | None = None,
        max_delivery_count: int | None = None,
    ) -> str:
        """Record a heartbeat; returns the state Redis had before (``dead`` means we were reaped).

        ``in_flight`` and ``max_delivery_count`` (shared dispatch: records held, and the highest
        delivery count among them) are stored when given, and removed from the record when not."""
        return str(
            self._run(
                "heartbeat",
                name,
                time.time(),
                state,
                current_task,
                pid,
                host,
                partitions,
                self.config.heartbeat_history,
                started_at,
                rebalances,
                "" if in_flight is None else int(in_flight),
                "" if max_delivery_count is None else int(max_delivery_count),
            )
        )

    @guarded
    def reap(self) -> list[str]:
        """Declare silent workers dead and take their tasks back; returns messages to publish again."""
        return list(
            self._run(
                "reap", time.time(), self.config.heartbeat_timeout, self.config.max_retries, self.config.result_ttl
            )
        )

    @guarded
    def due_retries(self, lease: float = 60.0) -> list[str]:
        """Messages whose retry is due. Each stays scheduled, leased for ``lease`` seconds: the claim
        removes it, and if nobody claims it by then (the publish failed, or a long backlog) it is
        handed out again; the claim script turns any extra copy into a skip. Removing it here after
        publishing instead would race with a fast claim-fail-reschedule and lose the new schedule."""
        return list(self._run("due", time.time(), lease))

    @guarded
    def stale_queued(self, cutoff: float, count: int = 1000) -> list[tuple[str, str]]:
        """``(id, updated_at)`` of tasks ``queued`` since before ``cutoff`` (scripts.STALE)."""
        flat = self._run("stale", cutoff, count)
        return list(zip(flat[::2], flat[1::2], strict=True))

    @guarded
    def republish(self, task_id: str, updated_at: str, note: str) -> str | None:
        """The message of a task still ``queued`` as of ``updated_at``, its history noting why it goes
        out again; None if a worker claimed it meanwhile (scripts.REPUBLISH)."""
        return self._run("republish", task_id, updated_at, time.time(), note) or None

    @guarded
    def take_turn(self, name: str, seconds: float) -> bool:
        """Whether this worker reconciles now: one worker per ``seconds``, whichever asks first."""
        return bool(self.redis.set(self.keys.reconciling, name, nx=True, px=max(1, int(seconds * 1000))))

    @guarded
    def prune_index(self, count: int = 500) -> int:
        """Drop ids of expired tasks from the task index (see scripts.PRUNE); returns how many."""
        if self.config.result_ttl <= 0:
            return 0  # records are kept forever, so no id can dangle
        return int(self._run("prune", time.time() - self.config.result_ttl, count))

    # --- reads -------------------------------------------------------------------------------
    @guarded
    def task(self, task_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.task(task_id))
        return _decode_task(raw) if raw else None

    @guarded
    def outcomes(self, task_ids: list[str]) -> list[tuple[TaskStatus, Any, str] | None]:
        """Status, result and error of each task (None for no record), in one round trip: what a
        waiting client needs, without decoding whole records."""
        if not task_ids:
            return []
        replies = self._round_trip([("HMGET", self.keys.task(t), "status", "result", "error") for t in task_ids])
        out: list[tuple[TaskStatus, Any, str] | None] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            status, result, error = reply
            out.append(
                None if status is None else (TaskStatus(status), json.loads(result) if result else None, error or "")
            )
        return out

    def status(self, task_id: str) -> TaskStatus:
        record = self.task(task_id)
        return TaskStatus(record["status"]) if record else TaskStatus.UNKNOWN

    @guarded
    def history(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(self.keys.history(task_id), 0, -1)]

    @guarded
    def wait_done(self, task_id: str, timeout: float) -> None:
        """Block up to ``timeout`` (at most 1 s) for the task's completion signal."""
        self.redis.blpop([self.keys.done(task_id)], timeout=max(0.01, min(timeout, 1.0)))

    @guarded
    def tasks(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first, through the index: cost grows with ``limit``, not with the number of tasks."""
        ids = self.redis.zrevrange(self.keys.tasks, offset, offset + limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.keys.task(task_id))
        return [_decode_task(raw) for raw in pipe.execute() if raw]

    @guarded
    def count_tasks(self) -> int:
        return int(self.redis.zcard(self.keys.tasks))

    @guarded
    def task_ids(self, prefix: str) -> list[str]:
        """Ids that start with ``prefix`` and still have a record, sorted. A scan of the index (the
        ids are scored by time, not by name, so no range query finds them); glob characters in the
        prefix are escaped, so it matches only itself. Expired ids linger in the index and are skipped."""
        pattern = _GLOB.sub(r"\\\g<0>", prefix) + "*"
        found = {task_id for task_id, _ in self.redis.zscan_iter(self.keys.tasks, match=pattern, count=1000)}
        ids = sorted(found)
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.exists(self.keys.task(task_id))
        return [task_id for task_id, exists in zip(ids, pipe.execute(), strict=True) if exists]

    @guarded
    def workers(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every worker record, or only those that heartbeated at ``since`` (Unix time) or later."""
        names = self.redis.zrangebyscore(self.keys.workers, "-inf" if since is None else since, "+inf")
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.worker(name))
        return [_decode_worker(raw) for raw in pipe.execute() if raw]

    @guarded
    def prune_workers(self, before: float) -> list[str]:
        """Delete the records (hash, heartbeats, index entry) of workers gone since before ``before``:
        stopped, declared dead, or silent (a worker killed while no other worker ran to declare it
        dead). Returns their names. Each removal is a transaction watching the worker's hash, so a
        worker that heartbeats meanwhile (it came back) is kept."""
        removed = []
        for name in self.redis.zrangebyscore(self.keys.workers, "-inf", before):
            key = self.keys.worker(name)
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    record = _decode_worker(pipe.hgetall(key))
                    last_seen = max(record.get(k) or 0.0 for k in ("last_heartbeat", "dead_at", "stopped_at"))
                    if last_seen > before:
                        continue
                    pipe.multi()
                    pipe.delete(key, self.keys.beats(name))
                    pipe.zrem(self.keys.workers, name)
                    pipe.execute()
                except redis.WatchError:
                    continue
            removed.append(name)
        return removed

    @guarded
    def beats(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        end = -1 if limit is None else limit - 1
        return [json.loads(b) for b in self.redis.lrange(self.keys.beats(name), 0, end)]

    @guarded
    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.redis.lrange(self.keys.dead_letters, 0, limit - 1)]

    @guarded
    def purge(self) -> int:
        """Delete every key of this namespace (tests and lab runs clean up with it)."""
        removed = 0
        batch: list[str] = []
        for key in self.redis.scan_iter(match=self.keys.pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += self.redis.delete(*batch)
                batch = []
        if batch:
            removed += self.redis.delete(*batch)
        return removed

    # --- helpers -----------------------------------------------------------------------------
    def _claim_args(self, msg: TaskMessage, worker: str, mode: str) -> list[Any]:
        return [msg.id, worker, time.time(), self.config.heartbeat_timeout, *self._fields(msg)[1:], mode]

    def _settle_args(self, worker: str, s: Settlement) -> tuple[str, list[Any]]:
        """The script and arguments that store one outcome: FINISH, RETRY (with its due time) or RELEASE."""
        now = time.time()
        if s.status is TaskStatus.RETRYING:
            return "retry", [s.task_id, worker, s.attempt, now + s.delay, s.error, s.reason, now]
        if s.status is TaskStatus.QUEUED:
            return "release", [s.task_id, worker, s.attempt, now, s.error]
        encoded = json.dumps(s.result) if s.status is TaskStatus.SUCCESS else ""
        return "finish", [
            s.task_id,
            worker,
            s.attempt,
            s.status.value,
            encoded,
            s.error,
            s.reason,
            now,
            self.config.result_ttl,
        ]

    def _fields(self, msg: TaskMessage) -> list[Any]:
        max_retries = self.config.max_retries if msg.max_retries is None else msg.max_retries
        return [
            msg.id,
            msg.op,
            json.dumps(msg.args),
            json.dumps(msg.kwargs),
            msg.submitted_at,
            msg.encode().decode(),
            max_retries,
        ]


_FLOATS = (
    "submitted_at",
    "started_at",
    "finished_at",
    "updated_at",
    "next_attempt_at",
    "last_heartbeat",
    "dead_at",
    "stopped_at",
)
_INTS = (
    "attempts",
    "max_retries",
    "processed",
    "failed",
    "lost",
    "revived",
    "pid",
    "rebalances",
    "in_flight",
    "max_delivery_count",
)


def _convert(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(raw)
    for name in _FLOATS:
        if name in out:
            out[name] = float(out[name]) if out[name] else None
    for name in _INTS:
        if name in out:
            out[name] = int(out[name]) if out[name] else 0
    return out


def _decode_task(raw: dict[str, str]) -> dict[str, Any]:
    out = _convert(raw)
    for name in ("args", "kwargs"):
        out[name] = json.loads(out[name]) if out.get(name) else ([] if name == "args" else {})
    out["result"] = json.loads(out["result"]) if out.get("result") else None
    out.pop("message", None)
    return out


def _decode_worker(raw: dict[str, str]) -> dict[str, Any]:
    return _convert(raw)
