"""The execution side of a worker: its slots, and each message's claim -> execute -> store.

The worker's consumer thread only talks to Kafka: it fetches messages into the runner's inbox and
commits what the ledger says is settled. This thread does the rest, so that a task of any length
never keeps the consumer from polling (the cause of the stranded partitions of old: a consumer that
polls only now and then cannot finish a rebalance, see docs/reliability.md).

Each turn of the loop makes one Redis round trip for the whole batch: store every outcome that
came back from the slots, and claim as many waiting messages as there are free slots (see
:meth:`Backend.exchange`). A message whose task a live worker elsewhere holds is *parked*: it is
asked about again every heartbeat, settled once the task is final, and run here if its holder dies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from yadtq.core.errors import DeliveriesExhausted, InvalidTask, MalformedMessage, ServiceUnavailable
from yadtq.core.ops import registry
from yadtq.core.task import TaskMessage, TaskStatus
from yadtq.store.backend import Backend, Claim, Settlement
from yadtq.worker.events import emit
from yadtq.worker.executor import Executor, Outcome, readable

if TYPE_CHECKING:
    from yadtq.core.config import Config
    from yadtq.transport.ledger import AckLedger, OffsetLedger
    from yadtq.worker.events import Hooks

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long the runner keeps retrying Redis before it gives up and the worker exits (its messages
#: are then redelivered to another worker, so nothing is lost).
OUTAGE_LIMIT = 120.0
CLAIM_MODES = {"effectively_once": "", "at_least_once": "force", "at_most_once": "once"}


def persist(call: Callable[[], T], worker: str) -> T:
    """Retry a Redis call through an outage (reconnect with backoff). Only the calling thread waits:
    the consumer thread keeps the worker in its group meanwhile."""
    delay, give_up = 0.1, time.monotonic() + OUTAGE_LIMIT
    while True:
        try:
            return call()
        except ServiceUnavailable as exc:
            if time.monotonic() > give_up:
                raise
            log.warning("%s: %s; retrying in %.1fs", worker, exc, delay)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


@dataclass
class Delivery:
    """One fetched message, and where it came from (what its commit will be)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    #: Times the broker has handed this record out, this one included (shared dispatch counts them;
    #: a consumer group does not, and every delivery reads 1).
    delivery_count: int = 1


@dataclass
class Run:
    """A task running in a slot, and every delivery of it that its outcome settles."""

    slot: Executor
    msg: TaskMessage
    attempt: int
    deliveries: list[Delivery]
    deadline: float
    started: float = field(default_factory=time.monotonic)


class Owner(Protocol):
    """What a runner uses of the worker that owns it: a :class:`~yadtq.worker.worker.Worker`.

    A protocol rather than the class itself, because the worker imports this module.
    """

    config: Config
    name: str
    hooks: list[Hooks]
    backend: Backend
    ledger: OffsetLedger | AckLedger
    nudge: threading.Event

    def stop(self) -> None: ...

    def await_commit(self, timeout: float = 5.0) -> None: ...

    def dead_letter(self, delivery: Delivery, exc: Exception, msg: TaskMessage | None) -> None: ...


class Runner:
    def __init__(self, worker: Owner) -> None:
        self.worker = worker
        self.config = worker.config
        self.mode = CLAIM_MODES[self.config.delivery]
        self.slots = [Executor(self.config.imports) for _ in range(self.config.concurrency)]
        self.running: dict[str, Run] = {}  # task id -> run
        #: Deliveries of tasks that have ended and whose outcome is being stored: their slot is free
        #: already, so the consumer may fetch the next task while the outcome is written.
        self.finishing = 0
        self.handled = 0
        self._inbox: deque[Delivery] = deque()
        #: Below this many messages waiting, the consumer fetches again (nudged awake if paused).
        self.low = max(1, self.config.prefetch // 2)
        self._parked: list[tuple[float, Delivery, TaskMessage]] = []  # (ask again at, delivery, message)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping: float | None = None  # monotonic time the stop was asked
        self.thread = threading.Thread(target=self._loop, name="yadtq-runner", daemon=True)
        self.error: BaseException | None = None

    # --- the consumer thread's side ---------------------------------------------------------
    def start(self) -> None:
        for slot in self.slots:
            slot.start()
        self.thread.start()

    def put(self, deliveries: Iterable[Delivery]) -> None:
        with self._lock:
            self._inbox.extend(deliveries)
        self._wake()

    def drop(self, partitions: set[int]) -> None:
        """Partitions were revoked: forget their messages that have not started (the next owner
        gets them from the last commit). Running tasks go on; whoever owns their partition next
        commits past them once their outcome is stored."""
        with self._lock:
            self._inbox = deque(d for d in self._inbox if d.partition not in partitions)
            self._parked = [p for p in self._parked if p[1].partition not in partitions]

    def waiting(self) -> int:
        """Messages fetched and not started: the consumer stops fetching above ``prefetch``."""
        return len(self._inbox)

    def parked(self) -> int:
        """Messages whose task a live worker elsewhere holds: they wait here without a slot."""
        with self._lock:
            return len(self._parked)

    def free(self) -> int:
        return len(self.slots) - len(self.running)

    def able(self, stuck_after: float) -> int:
        """Slots that can serve a partition: all but those whose task has run ``stuck_after`` seconds
        or more (0: all). A younger task is expected to end like any short one; counting its slot
        as taken made workers busy between two short tasks hand their partitions back and forth at
        every join. (Consumer thread: it reads a snapshot, since the runner thread changes
        ``running`` meanwhile.)"""
        if not stuck_after:
            return len(self.slots)
        now = time.monotonic()
        return len(self.slots) - sum(1 for run in list(self.running.values()) if now - run.started >= stuck_after)

    def stop(self) -> None:
        """Take no new messages; finish running tasks within ``shutdown_grace``, then hand them back."""
        if self._stopping is None:
            self._stopping = time.monotonic()
        self._wake()

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the runner thread ------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while self._stopping is None or self.running:
                finished = self._collect(self._wait())
                taken = [] if self._stopping is not None else self._take()
                self._exchange(finished, taken)
        except BaseException as exc:  # the worker stops; unsettled messages are redelivered elsewhere
            log.exception("%s: runner failed", self.worker.name)
            self.error = exc
        finally:
            self.worker.stop()  # the consumer loop ends when this thread does

    def _wait(self) -> set[int]:
        """Sleep until an outcome, a new message, a deadline or a parked message is due."""
        now = time.monotonic()
        with self._lock:
            ready = bool(self._inbox) and self.free() > 0 and self._stopping is None
            # a parked message can only be taken into a free slot: don't spin while there is none
            parked = min((p[0] for p in self._parked), default=now + 1.0) if self.free() > 0 else now + 1.0
        if ready:
            timeout = 0.0
        else:
            deadlines = [run.deadline for run in self.running.values()]
            if self._stopping is not None:
                deadlines.append(self._stopping + self.config.shutdown_grace)
            timeout = max(0.0, min([parked, now + 0.5, *deadlines]) - now)
        fds = [run.slot.fileno for run in self.running.values()]
        ready = readable([fd for fd in fds if fd is not None] + [self._wake_r], timeout)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        return ready

    def _collect(self, ready: set[int]) -> list[tuple[Run, Outcome]]:
        """Outcomes of finished slots, of tasks past their time limit, and of the shutdown grace."""
        out: list[tuple[Run, Outcome]] = []
        now = time.monotonic()
        grace_over = self._stopping is not None and now > self._stopping + self.config.shutdown_grace
        for run in list(self.running.values()):
            outcome = run.slot.wait(0) if run.slot.fileno in ready else None
            if outcome is None and now > run.deadline:
                run.slot.kill()
                limit = run.deadline - run.started
                outcome = Outcome("timeout", error=f"TimeLimitExceeded: ran longer than {limit:g} s", duration=limit)
            if outcome is None and grace_over:
                run.slot.kill()
                outcome = Outcome("released")
            if outcome is not None:
                if outcome.kind != "released":  # a handed-back task's deliveries stay unsettled
                    self.finishing += len(self._unsettled(run))
                del self.running[run.msg.id]
                out.append((run, outcome))
        if out:
            self.worker.nudge.set()  # a slot is free: fetch the next task while this outcome is stored
        return out

    def _unsettled(self, run: Run) -> list[Delivery]:
        """The deliveries a run's outcome settles: at most once settled the first before the run."""
        return run.deliveries[1:] if self.mode == "once" else run.deliveries

    def _take(self) -> list[tuple[Delivery, TaskMessage]]:
        """Messages to claim now, at most one per free slot: parked ones that are due, then new ones.

        A message whose task already runs here joins that run (it is settled with it); a second copy
        of a task in the same batch, or one for which no slot is left, waits for the next turn.
        """
        now = time.monotonic()
        with self._lock:
            candidates = [(d, m) for at, d, m in self._parked if at <= now]
            self._parked = [p for p in self._parked if p[0] > now]
        taken: dict[str, tuple[Delivery, TaskMessage]] = {}
        while True:
            if candidates:
                delivery, msg = candidates.pop(0)
            else:
                if len(taken) >= self.free():
                    break
                with self._lock:
                    if not self._inbox:
                        break
                    delivery = self._inbox.popleft()
                    if len(self._inbox) < self.low:
                        self.worker.nudge.set()
                decoded = self._decode(delivery)
                if decoded is None:
                    continue
                msg = decoded
                if delivery.delivery_count >= self.config.max_deliveries:
                    self._deliveries_exhausted(delivery, msg)
                    continue
            run = self.running.get(msg.id)
            if run is not None and self.mode != "force":
                run.deliveries.append(delivery)  # a redelivery of what runs here
            elif run is not None:
                self._park(delivery, msg, now + self.config.heartbeat_interval)
            elif msg.id in taken or len(taken) >= self.free():
                self._park(delivery, msg, now)
            else:
                taken[msg.id] = (delivery, msg)
        return list(taken.values())

    def _park(self, delivery: Delivery, msg: TaskMessage, until: float) -> None:
        with self._lock:
            self._parked.append((until, delivery, msg))

    def _decode(self, delivery: Delivery) -> TaskMessage | None:
        """The message, or None after dead-lettering it (a message must never crash the worker)."""
        msg: TaskMessage | None = None
        try:
            msg = TaskMessage.decode(delivery.value or b"", self.config.max_message_bytes)
            registry.get(msg.op).check(msg.args, msg.kwargs)
            return msg
        except (MalformedMessage, InvalidTask) as exc:
            self.worker.dead_letter(delivery, exc, msg)
        except Exception as exc:
            self.worker.dead_letter(delivery, MalformedMessage(f"invalid: {type(exc).__name__}: {exc}"), msg)
        self._settle([delivery])
        return None

    def _deliveries_exhausted(self, delivery: Delivery, msg: TaskMessage) -> None:
        """The broker's last delivery of a record every earlier holder died or stalled with: dead-letter
        it (the task fails, unless it runs or ended elsewhere) rather than risk a worker more."""
        reason = (
            f"delivered {delivery.delivery_count} times (max_deliveries {self.config.max_deliveries}): "
            "each worker that held it died or stalled"
        )
        self.worker.dead_letter(delivery, DeliveriesExhausted(reason), msg)
        self._settle([delivery])

    def _exchange(self, finished: list[tuple[Run, Outcome]], taken: list[tuple[Delivery, TaskMessage]]) -> None:
        """One Redis round trip: store the outcomes, claim the taken messages; then act on both."""
        settlements = [self._settlement(run, outcome) for run, outcome in finished]
        if not settlements and not taken:
            return
        name = self.worker.name
        stored, claims = persist(
            lambda: self.worker.backend.exchange(name, settlements, [m for _, m in taken], self.mode), name
        )
        for (run, outcome), settlement, ok in zip(finished, settlements, stored, strict=True):
            self._finished(run, outcome, settlement, ok)
        for (delivery, msg), claim in zip(taken, claims, strict=True):
            self._claimed(delivery, msg, claim)

    def _settlement(self, run: Run, outcome: Outcome) -> Settlement:
        msg, attempt = run.msg, run.attempt
        if outcome.kind == "ok":
            return Settlement(msg.id, attempt, TaskStatus.SUCCESS, outcome.value)
        if outcome.kind == "released":
            return Settlement(
                msg.id, attempt, TaskStatus.QUEUED, error=f"handed back by {self.worker.name} on shutdown"
            )
        max_retries = self.config.max_retries if msg.max_retries is None else msg.max_retries
        if self.mode == "once":
            max_retries = 0
        retryable = outcome.kind == "crashed" or msg.retry_errors
        if retryable and attempt <= max_retries:
            delay = min(self.config.retry_backoff * 2 ** (attempt - 1), self.config.retry_backoff_max)
            return Settlement(msg.id, attempt, TaskStatus.RETRYING, None, outcome.error, outcome.kind, delay)
        return Settlement(msg.id, attempt, TaskStatus.FAILED, None, outcome.error, outcome.kind)

    def _finished(self, run: Run, outcome: Outcome, settlement: Settlement, stored: bool) -> None:
        msg = run.msg
        if settlement.status is TaskStatus.QUEUED:
            log.info("%s: handed %s back on shutdown", self.worker.name, msg.id)
            return  # its deliveries stay unsettled: Kafka gives the message to the next owner
        status = settlement.status.value if stored else "discarded"
        if not stored:
            log.warning(
                "%s: result of %s discarded: the task was reassigned while it ran here", self.worker.name, msg.id
            )
        else:
            log.info("%s: %s %s (attempt %d) -> %s", self.worker.name, msg.op, msg.args, run.attempt, status)
        emit(self.worker.hooks, "task_finished", self.worker, msg, status, outcome)
        deliveries = self._unsettled(run)
        self.finishing -= len(deliveries)  # before settling: the consumer may count a slot too few, never too many
        self._settle(deliveries)

    def _claimed(self, delivery: Delivery, msg: TaskMessage, claim: Claim) -> None:
        if claim.outcome == "claimed":
            if self.mode == "once":  # at most once: the commit goes before the run
                self._settle([delivery])
                self.worker.await_commit()
            slot = next(s for s in self.slots if all(r.slot is not s for r in self.running.values()))  # _take left room
            limit = msg.time_limit or self.config.time_limit
            slot.submit(msg.op, msg.args, msg.kwargs)
            self.running[msg.id] = Run(slot, msg, claim.attempt, [delivery], time.monotonic() + limit)
            emit(self.worker.hooks, "task_claimed", self.worker, msg, claim.attempt)
        elif claim.outcome == "busy" and self.mode != "force":
            # a live worker elsewhere runs it: ask again in a heartbeat
            self._park(delivery, msg, time.monotonic() + self.config.heartbeat_interval)
        else:
            log.info("%s: skip %s (%s %s)", self.worker.name, msg.id, claim.outcome, claim.detail)
            emit(self.worker.hooks, "task_skipped", self.worker, msg, f"{claim.outcome}: {claim.detail}")
            self._settle([delivery])

    def _settle(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            self.worker.ledger.settle(d.partition, d.offset)
        self.handled += len(deliveries)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (so the runner will wake anyway) or closed (it has stopped)
