"""A worker: one process, one member of the Kafka consumer group, one task at a time.

The loop, for each message: **decode -> claim -> execute -> store -> commit**. The offset is
committed only after the outcome is in Redis, so a worker that dies at any point leaves its
message uncommitted and Kafka hands it to another worker; the claim script makes sure a task
already finished is not run again. While a task runs (in the executor's child process) the main
thread pauses its partitions and keeps polling, so Kafka never thinks a busy worker is dead, however
long the task takes.

A heartbeat thread writes the worker's state to Redis every ``heartbeat_interval`` and runs two
maintenance jobs that any live worker can do: the reaper (requeue the task of a worker that stopped
heartbeating, without waiting for Kafka's session timeout) and the retry scheduler.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError

from yadtq.backend import Backend
from yadtq.broker import Broker, commit
from yadtq.config import Config
from yadtq.errors import InvalidTask, MalformedMessage, ServiceUnavailable
from yadtq.events import Hooks, emit
from yadtq.executor import Executor, Outcome
from yadtq.ops import load_imports, registry
from yadtq.task import TaskMessage, TaskStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a worker keeps retrying Redis before it gives up and exits (its message is then
#: redelivered to another worker, so nothing is lost). It polls Kafka meanwhile.
OUTAGE_LIMIT = 120.0
POLL_MS = 200


class Worker:
    def __init__(self, config: Config | None = None, name: str | None = None, hooks: Sequence[Hooks] = ()) -> None:
        self.config = config or Config.from_env()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.hooks = list(hooks)
        self.backend = Backend(self.config)
        self.broker = Broker(self.config)
        self.executor = Executor(self.config.imports)
        self.state = "starting"
        self.current: TaskMessage | None = None
        self.partitions: frozenset[int] = frozenset()
        self.handled = 0
        #: Partition assignments received from Kafka; a busy worker must not see this grow.
        self.rebalances = 0
        self.started_at = time.time()
        self._stop = threading.Event()
        self._beating = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._unassigned_since: float | None = None

    # --- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to stop: it finishes (or, after ``shutdown_grace``, hands back) its task."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        # Handlers only set a flag; the loop does the work in its own order (see run()).
        def handler(signum: int, _frame: Any) -> None:
            log.info("%s: %s received, stopping", self.name, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # --- main loop ---------------------------------------------------------------------------
    def run(self, max_tasks: int | None = None) -> None:
        """Consume until stopped (or ``max_tasks`` messages were handled)."""
        load_imports(self.config.imports)
        self.broker.ensure_topics()
        self.executor.start()
        self._consumer = self.broker.consumer(self.name, _Listener(self))
        beat = threading.Thread(target=self._heartbeat_loop, name="yadtq-heartbeat", daemon=True)
        self.state = "idle"
        self._persist(self._beat)  # visible in `yadtq workers` before the first task
        beat.start()
        emit(self.hooks, "worker_started", self)
        log.info("%s: consuming %s as part of group %s", self.name, self.config.task_topic, self.config.group_id)
        try:
            while not self._stop.is_set() and (max_tasks is None or self.handled < max_tasks):
                for records in self._consumer.poll(timeout_ms=POLL_MS).values():
                    for record in records:
                        self._handle(record)
                if self._stranded():
                    self._rejoin()
        finally:
            self._shutdown(beat)

    def _stranded(self) -> bool:
        """True when Kafka's settled group no longer lists this worker, though it still polls.

        Under CPU load kafka-python can lose a group response and leave the consumer waiting in a
        rebalance while the group goes on without it: the worker polls, heartbeats to Redis and looks
        idle, but never gets work. (An idle worker beyond the partition count is a member; fine.)
        """
        now = time.monotonic()
        if self.partitions or self._unassigned_since is None:
            self._unassigned_since = None if self.partitions else now
            return False
        if now - self._unassigned_since < 2 * self.config.session_timeout:
            return False
        self._unassigned_since = now  # ask Kafka at most once per window
        members = self.broker.group_members()
        return members is not None and self.name not in members

    def _rejoin(self) -> None:
        log.warning("%s: Kafka's group lost this worker; rejoining with a new consumer", self.name)
        assert self._consumer is not None
        try:
            self._consumer.close(autocommit=False, timeout_ms=2000)
        except KafkaError as exc:
            log.warning("%s: closing the stranded consumer: %s", self.name, exc)
        self._consumer = self.broker.consumer(self.name, _Listener(self))

    def _shutdown(self, beat: threading.Thread) -> None:
        self.state = "stopping"
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False, timeout_ms=5000)  # leaving the group rebalances now
            except KafkaError as exc:
                log.warning("%s: consumer close: %s", self.name, exc)
        self.executor.close()
        self._beating.set()
        beat.join(timeout=self.config.heartbeat_interval + 6)
        self.state = "stopped"
        try:
            self._beat()
        except ServiceUnavailable:
            log.warning("%s: could not record the stop (Redis unavailable)", self.name)
        self.broker.close()
        self.backend.close()
        emit(self.hooks, "worker_stopped", self)
        log.info("%s: stopped after %d messages", self.name, self.handled)

    def _handle(self, record: Any) -> None:
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())
        try:
            if self._process(record):
                commit(self._consumer, record.topic, record.partition, record.offset)
            self.handled += 1
        finally:
            self.current = None
            self.state = "idle"
            self._consumer.resume(*self._consumer.assignment())

    def _process(self, record: Any) -> bool:
        """Everything for one message; returns whether its offset may be committed."""
        msg: TaskMessage | None = None
        try:
            msg = TaskMessage.decode(record.value or b"", self.config.max_message_bytes)
            registry.get(msg.op).check(msg.args, msg.kwargs)
        except (MalformedMessage, InvalidTask) as exc:
            self._dead_letter(record, exc, msg)
            return True
        except Exception as exc:  # a message must never crash the worker, whatever it contains
            self._dead_letter(record, MalformedMessage(f"invalid: {type(exc).__name__}: {exc}"), msg)
            return True
        claim = self._persist(lambda: self.backend.claim(msg, self.name))
        if claim.outcome != "claimed":
            log.info("%s: skip %s (%s %s)", self.name, msg.id, claim.outcome, claim.detail)
            emit(self.hooks, "task_skipped", self, msg, f"{claim.outcome}: {claim.detail}")
            return True
        self.current, self.state = msg, "busy"
        emit(self.hooks, "task_claimed", self, msg, claim.attempt)
        outcome = self._execute(msg)
        if outcome is None:  # stopping: hand the task back, leave the offset for the next owner
            self._persist(
                lambda: self.backend.release(
                    msg.id, self.name, claim.attempt, f"handed back by {self.name} on shutdown"
                )
            )
            return False
        status = self._store(msg, claim.attempt, outcome)
        emit(self.hooks, "task_finished", self, msg, status, outcome)
        return True

    def _execute(self, msg: TaskMessage) -> Outcome | None:
        """Run in the executor, polling Kafka meanwhile; None means 'stopped before it finished'."""
        limit = msg.time_limit or self.config.time_limit
        self.executor.submit(msg.op, msg.args, msg.kwargs)
        started = time.monotonic()
        grace_until: float | None = None
        while True:
            outcome = self.executor.wait(0.1)
            if outcome is not None:
                return outcome
            self._tick()
            now = time.monotonic()
            if now - started > limit:
                self.executor.kill()
                return Outcome(
                    "timeout", error=f"TimeLimitExceeded: ran longer than {limit:g} s", duration=now - started
                )
            if self._stop.is_set():
                if grace_until is None:
                    grace_until = now + self.config.shutdown_grace
                    log.info("%s: waiting up to %gs for task %s", self.name, self.config.shutdown_grace, msg.id)
                elif now > grace_until:
                    self.executor.kill()
                    return None

    def _store(self, msg: TaskMessage, attempt: int, outcome: Outcome) -> str:
        """Record the outcome (or schedule a retry) and say which status the task got."""
        if outcome.kind == "ok":
            stored = self._persist(
                lambda: self.backend.finish(msg.id, self.name, attempt, TaskStatus.SUCCESS, outcome.value)
            )
            status = TaskStatus.SUCCESS.value
        else:
            reason = outcome.kind  # error | timeout | crashed
            max_retries = self.config.max_retries if msg.max_retries is None else msg.max_retries
            retryable = outcome.kind == "crashed" or msg.retry_errors
            if retryable and attempt <= max_retries:
                delay = min(self.config.retry_backoff * 2 ** (attempt - 1), self.config.retry_backoff_max)
                stored = self._persist(
                    lambda: self.backend.retry(msg.id, self.name, attempt, delay, outcome.error, reason)
                )
                status = TaskStatus.RETRYING.value
            else:
                stored = self._persist(
                    lambda: self.backend.finish(
                        msg.id, self.name, attempt, TaskStatus.FAILED, None, outcome.error, reason
                    )
                )
                status = TaskStatus.FAILED.value
        if not stored:
            log.warning("%s: result of %s discarded: the task was reassigned while it ran here", self.name, msg.id)
            return "discarded"
        log.info(
            "%s: %s %s%s -> %s", self.name, msg.op, msg.args, f" (attempt {attempt})" if attempt > 1 else "", status
        )
        return status

    def _dead_letter(self, record: Any, exc: Exception, msg: TaskMessage | None) -> None:
        reason = exc.reason if isinstance(exc, MalformedMessage) else str(exc)
        raw = record.value or b""
        task_id = msg.id if msg is not None else None
        entry = {
            "at": time.time(),
            "reason": reason,
            "worker": self.name,
            "partition": record.partition,
            "offset": record.offset,
            "task_id": task_id,
            "preview": raw[:200].decode("utf-8", "replace"),
        }
        log.warning("%s: dead-lettered %s[%d]@%d: %s", self.name, record.topic, record.partition, record.offset, reason)
        try:
            self.broker.publish(raw, topic=self.config.dead_letter_topic, headers=[("reason", reason.encode()[:1000])])
        except ServiceUnavailable as err:
            log.warning("%s: dead-letter topic unavailable (%s); the Redis record stays", self.name, err)
        self._persist(lambda: self.backend.dead_letter(entry))
        if msg is not None:
            self._persist(
                lambda: self.backend.reject(msg.id, msg.op, f"rejected: {reason}", raw.decode("utf-8", "replace"))
            )
        emit(self.hooks, "dead_lettered", self, entry)

    # --- keeping Kafka and Redis happy -----------------------------------------------------------
    def _tick(self) -> None:
        """Poll with every partition paused: keeps the group membership alive, fetches nothing.

        A rebalance during the poll can assign new, unpaused partitions; anything fetched from them
        is rewound so it is read again once this task is done.
        """
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())
        for tp, records in self._consumer.poll(timeout_ms=0).items():
            self._consumer.seek(tp, records[0].offset)
            self._consumer.pause(tp)

    def _persist(self, call: Callable[[], T]) -> T:
        """Retry a Redis call through an outage (reconnect with backoff), polling Kafka meanwhile."""
        delay, give_up = 0.1, time.monotonic() + OUTAGE_LIMIT
        while True:
            try:
                return call()
            except ServiceUnavailable as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                self._tick()
                time.sleep(0.05)
            delay = min(delay * 2, 2.0)

    def _beat(self) -> str:
        current = self.current.id if self.current else ""
        partitions = ",".join(str(p) for p in sorted(self.partitions))
        return self.backend.heartbeat(
            self.name,
            self.state,
            current,
            os.getpid(),
            socket.gethostname(),
            partitions,
            self.started_at,
            self.rebalances,
        )

    def _heartbeat_loop(self) -> None:
        warned = False
        beating_since = time.monotonic()
        while not self._beating.wait(self.config.heartbeat_interval):
            try:
                if self._beat() == "dead":
                    log.warning("%s: was declared dead (paused or cut off); its task may run elsewhere", self.name)
                # Only judge others after beating for a whole timeout ourselves: right after a
                # Redis outage every worker looks silent, and none of them is dead.
                if time.monotonic() - beating_since > self.config.heartbeat_timeout:
                    self._requeue(self.backend.reap(), "requeued from a dead worker", "Kafka redelivers it")
                self._requeue(self.backend.due_retries(), "retry", "its lease hands it out again")
                emit(self.hooks, "heartbeat", self)
                warned = False
            except ServiceUnavailable as exc:
                beating_since = time.monotonic()
                if not warned:
                    log.warning("%s: heartbeat failed: %s", self.name, exc)
                    warned = True

    def _requeue(self, messages: list[str], why: str, fallback: str) -> None:
        """Publish messages again, onto one of our own partitions: a dead worker's partitions are not
        reassigned until Kafka's session timeout, and we are alive right now. ``fallback`` says what
        recovers a message whose publish fails."""
        for raw in messages:
            mine = sorted(self.partitions)
            partition = random.choice(mine) if mine else None
            msg = TaskMessage.decode(raw, max(self.config.max_message_bytes, len(raw)))
            try:
                self.broker.publish(raw.encode(), key=msg.id, partition=partition)
                log.info("%s: %s %s", self.name, why, msg.id)
            except ServiceUnavailable as exc:
                log.warning("%s: could not publish %s again (%s); %s", self.name, msg.id, exc, fallback)


class _Listener(ConsumerRebalanceListener):
    """Tracks the worker's partitions; pauses new ones while a task runs."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.partitions = self.worker.partitions - {tp.partition for tp in revoked}

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.rebalances += 1
        self.worker.partitions = self.worker.partitions | {tp.partition for tp in assigned}
        if self.worker.current is not None and self.worker._consumer is not None:
            self.worker._consumer.pause(*assigned)
        log.info("%s: partitions %s", self.worker.name, sorted(self.worker.partitions) or "none")
