"""A worker: one process, one member of the Kafka group, ``concurrency`` tasks at a time.

Each message goes through **decode -> claim -> execute -> store -> acknowledge**. The message is
acknowledged only after the outcome is in Redis, so a worker that dies at any point leaves it
unacknowledged and Kafka hands it to another worker; the claim script makes sure a task already
finished is not run again. How a message is acknowledged depends on the dispatch:

- **shared** (a share group): the worker fetches at most as many records as it has free slots,
  acknowledges each one (ACCEPT) once settled, and renews the broker's lock on the ones it still
  holds; the broker gives an unacknowledged record to another worker when its lock expires;
- **partitioned** (a consumer group): each partition is one worker's; the worker commits the
  settled prefix of each partition (:class:`OffsetLedger`) and, while every slot is busy, hands
  its partitions to free workers (see ``transport/assignor.py``).

Three threads, each with one job:

- the **consumer** (this module's loop, the main thread) is the only one that touches the Kafka
  consumer. It polls all the time, so the group never waits for this worker; it feeds fetched
  messages to the runner and acknowledges or commits what the ledger says is settled;
- the **runner** (``runner.py``) claims, executes in child processes and stores outcomes;
- the **heartbeat** writes the worker's state to Redis every ``heartbeat_interval`` and runs two
  maintenance jobs any live worker can do: the reaper (requeue the task of a worker that stopped
  heartbeating, without waiting for Kafka's session timeout), the retry scheduler, and trimming the
  task index of ids whose records expired.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError

from yadtq.core.config import Config
from yadtq.core.errors import MalformedMessage, ServiceUnavailable
from yadtq.core.ops import load_imports
from yadtq.core.task import TaskMessage
from yadtq.store.backend import Backend
from yadtq.transport.assignor import CapacityAssignor
from yadtq.transport.broker import Broker, commit, request_rejoin
from yadtq.transport.ledger import AckLedger, OffsetLedger
from yadtq.transport.sharegroup import ShareConsumer, ShareGroupError
from yadtq.worker.events import Hooks, emit
from yadtq.worker.reconcile import reconcile
from yadtq.worker.runner import Delivery, Runner, persist

log = logging.getLogger(__name__)

#: The consumer's poll timeout. Short, so that commits, stops and sheds happen promptly; a poll
#: returns at once when messages arrive, so it costs no latency.
POLL_MS = 100
#: Longest wait for a share-group member's first assignment before the worker starts its loop anyway.
JOIN_WAIT = 10.0
#: Pause after a Kafka error in the consumer loop (the broker restarting, say) before trying again.
KAFKA_RETRY = 0.5
#: How long a shared worker with no free slot holds its acknowledgements, in case a slot frees and
#: they can ride on the next fetch: a short task's acknowledgement sent alone would make the fetch
#: after it wait behind it (one request at a time per connection). Far below the lock's duration.
ACK_LINGER = 0.02


class Worker:
    def __init__(self, config: Config | None = None, name: str | None = None, hooks: Sequence[Hooks] = ()) -> None:
        self.config = config or Config.from_env()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.hooks = list(hooks)
        self.backend = Backend(self.config)
        self.broker = Broker(self.config)
        self.ledger: OffsetLedger | AckLedger = OffsetLedger()
        self.runner = Runner(self)
        #: The dispatch in use: the configured one, or ``partitioned`` on a broker without share groups.
        self.dispatch = self.config.dispatch
        self._share: ShareConsumer | None = None
        self._renewed = time.monotonic()
        self._acks_due: float | None = None  # when the held acknowledgements go alone (ACK_LINGER)
        #: Shared dispatch: the broker's delivery count of each record held, (partition, offset) ->
        #: count, for the heartbeat (``_beat``). Replaced, never changed in place, by the consumer thread.
        self._delivery_counts: dict[tuple[int, int], int] = {}
        self.state = "starting"
        self.partitions: frozenset[int] = frozenset()
        #: Partition assignments received from Kafka (one per rebalance this worker took part in).
        self.rebalances = 0
        self.started_at = time.time()
        self._stop = threading.Event()
        self._beating = threading.Event()
        self._reconciler: threading.Thread | None = None
        self._next_turn = time.monotonic()  # when to ask for the next turn to reconcile
        self._consumer: KafkaConsumer | None = None
        self._unassigned_since: float | None = None
        self._paused = False
        #: Free slots this worker announced at its last join (-1: a rejoin is asked and pending).
        self._joined_free = self.config.concurrency
        self._committed = threading.Condition()
        self._commit_rounds = 0  # completed passes of _commit(), for await_commit
        self._committing: Any = None  # the asynchronous commit in flight
        #: Wakes the consumer thread early while fetching is paused (see ``_poll``).
        self.nudge = threading.Event()
        #: True from the start of a rebalance (partitions revoked) until its assignment arrives.
        self.rebalancing = False

    @property
    def handled(self) -> int:
        return self.runner.handled

    @property
    def current(self) -> list[TaskMessage]:
        return [run.msg for run in list(self.runner.running.values())]

    # --- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop: it finishes (or, after ``shutdown_grace``, hands back) its tasks."""
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
        if self.config.dispatch == "shared" and not self.broker.shared_dispatch():
            log.warning(
                "%s: this Kafka broker has no share groups (Kafka 4.2 or later has them); "
                "falling back to dispatch 'partitioned'",
                self.name,
            )
        self.dispatch = "shared" if self.broker.shared_dispatch() else "partitioned"
        self.broker.ensure_topics()
        self.runner.start()
        if self.dispatch == "shared":
            self._share = self.broker.share_consumer(self.name)
            self.ledger = AckLedger(self._acknowledge)
            # Shown as a member with its partition from its first heartbeat (about a second).
            self._share.wait_assigned(JOIN_WAIT)
            self.partitions = self._share.assignment
        else:
            self._consumer = self._subscribe()
        beat = threading.Thread(target=self._heartbeat_loop, name="yadtq-heartbeat", daemon=True)
        self.state = "idle"
        self._persist_beat()  # visible in `yadtq workers` before the first task
        beat.start()
        emit(self.hooks, "worker_started", self)
        log.info(
            "%s: consuming %s as part of %s group %s (concurrency %d, %s)",
            self.name,
            self.config.task_topic,
            "share" if self._share is not None else "consumer",
            self.config.share_group_id if self._share is not None else self.config.group_id,
            self.config.concurrency,
            self.config.delivery,
        )
        try:
            while self.runner.thread.is_alive():
                if self._stop.is_set() or (max_tasks is not None and self.handled >= max_tasks):
                    self.runner.stop()
                try:
                    if self._share is not None:
                        self._poll_shared(self._share)
                        self._commit()
                    else:
                        self._poll()
                        self._commit()
                        self._maybe_shed()
                        if self._stranded():
                            self._rejoin()
                except ShareGroupError:
                    raise  # refused for good (authorization, say): retrying cannot help
                except KafkaError as exc:
                    # Kafka restarting or unreachable: keep the worker (its tasks run on, outcomes
                    # go to Redis) and try again; the consumer reconnects by itself.
                    log.warning("%s: Kafka: %s; retrying", self.name, exc)
                    time.sleep(KAFKA_RETRY)
                finally:
                    self.state = "busy" if self.runner.running else "idle"
        finally:
            self._shutdown(beat)
        if self.runner.error is not None:
            raise self.runner.error

    def _subscribe(self) -> KafkaConsumer:
        return self.broker.consumer(
            self.name, _Listener(self), CapacityAssignor(self._announce_free), max_poll_records=self.config.prefetch
        )

    def _poll(self) -> None:
        """Fetch into the runner; pause fetching while it has ``prefetch`` messages waiting.

        While paused, the thread sleeps until :attr:`nudge` wakes it (the runner took half its
        messages, or waits for a commit) or ``POLL_MS`` passes, then polls without waiting: polling
        a paused consumer often, to resume in time, cost more CPU than the tasks themselves with
        eight workers on two cores. Not during a rebalance, though: kafka-python drops a join that
        completes between two polls and starts another (see docs/reliability.md), so from the
        moment one begins (``on_partitions_revoked``) until it ends the thread waits inside poll."""
        assert self._consumer is not None
        stopping = self._stop.is_set()
        waiting = self.runner.waiting()
        if not self._paused and (stopping or waiting >= self.config.prefetch):
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
        elif self._paused and not stopping and waiting < self.runner.low:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False
        dozing = self._paused and not stopping and not self.rebalancing
        if dozing and self.nudge.wait(POLL_MS / 1000):
            self.nudge.clear()
        batches = self._consumer.poll(timeout_ms=0 if dozing else POLL_MS)
        deliveries = []
        for tp, records in batches.items():
            for record in records:
                self.ledger.add(tp.partition, record.offset)
                deliveries.append(Delivery(tp.topic, tp.partition, record.offset, record.value))
        if deliveries:
            self.runner.put(deliveries)

    def _poll_shared(self, share: ShareConsumer) -> None:
        """Acquire at most as many records as there are slots to start them in: a record waits in the
        broker, where any worker with a free slot can take it, not here behind a running task.

        With no room (or stopping) nothing is fetched: the thread sleeps until :attr:`nudge` (a task
        ended, or ``AckLedger`` settled a record) or ``POLL_MS`` passes; acknowledgements wait up to
        ``ACK_LINGER`` for a fetch to ride on before they are sent alone. Every ``share_lock / 3`` the
        locks of the records still held are renewed, so a task longer than the lock keeps its record.
        """
        self.partitions = share.assignment
        if time.monotonic() - self._renewed > self.config.share_lock / 3:
            self._renewed = time.monotonic()
            share.renew(self.ledger.held())  # type: ignore[union-attr]
        # Records held (running, waiting or being claimed) count against the slots too: the runner
        # moves a record out of its inbox before its claim comes back, and at most once settles it
        # before running it. Parked ones (their task runs elsewhere) take no slot, nor do those of
        # tasks that have ended and whose outcome is being stored (the runner nudges us as they end).
        held = self.ledger.unsettled() - self.runner.parked() - self.runner.finishing
        room = (
            0 if self._stop.is_set() else min(self.runner.free() - self.runner.waiting(), len(self.runner.slots) - held)
        )
        now = time.monotonic()
        if room <= 0:
            sleep = POLL_MS / 1000
            if not share.pending():
                self._acks_due = None
            elif self._acks_due is None or now < self._acks_due:
                self._acks_due = self._acks_due or now + ACK_LINGER
                sleep = self._acks_due - now
            else:
                share.flush()
                self._acks_due = None
            if self.nudge.wait(sleep):
                self.nudge.clear()
            return
        self._acks_due = None  # they go with this fetch
        records = share.poll(room, POLL_MS / 1000)
        for record in records:
            self.ledger.add(record.partition, record.offset)
        if records:
            seen = {**self._delivery_counts, **{(r.partition, r.offset): r.delivery_count for r in records}}
            self._delivery_counts = {k: seen[k] for k in self.ledger.held() if k in seen}  # type: ignore[union-attr]
            self.runner.put(Delivery(r.topic, r.partition, r.offset, r.value or b"", r.delivery_count) for r in records)

    def _acknowledge(self, partition: int, offset: int) -> None:
        """A settled record (runner thread): ACCEPT it with the next request, and wake the consumer
        thread, since settling usually frees a slot."""
        assert self._share is not None
        self._share.acknowledge(partition, offset)
        self.nudge.set()

    def _commit(self, final: bool = False) -> None:
        """Commit every partition's settled prefix; a refused commit is harmless (see ``commit``).

        One asynchronous commit is in flight at a time (the next one carries everything settled
        meanwhile); the ``final`` one, at shutdown, waits for it and then for its own answer.
        With shared dispatch, send the acknowledgements gathered since the last request instead."""
        if self._share is not None:
            self._share.flush()
            with self._committed:
                self._commit_rounds += 1
                self._committed.notify_all()
            return
        assert self._consumer is not None
        if final:
            deadline = time.monotonic() + 5
            while self._committing is not None and not self._committing.is_done and time.monotonic() < deadline:
                time.sleep(0.01)
        elif self._committing is not None and not self._committing.is_done:
            return
        points = self.ledger.commit_points()
        if points:
            owned = {tp.partition for tp in self._consumer.assignment()}
            wait = final or self.config.delivery == "at_most_once"
            mine = {p: o for p, o in points.items() if p in owned}
            self._committing = commit(self._consumer, self.config.task_topic, mine, wait, self.ledger.retry)
        with self._committed:
            self._commit_rounds += 1
            self._committed.notify_all()

    def await_commit(self, timeout: float = 5.0) -> None:
        """Block the runner until the consumer thread has committed what is settled (at most once:
        the commit goes before the run)."""
        deadline = time.monotonic() + timeout
        with self._committed:
            # Two rounds: the first may have read the ledger before this delivery was settled.
            target = self._commit_rounds + 2
            while self._commit_rounds < target and time.monotonic() < deadline:
                self.nudge.set()  # the consumer thread may be asleep, fetching paused
                self._committed.wait(max(0.0, deadline - time.monotonic()))

    def _announce_free(self) -> int:
        """Slots free for the partitions, as told to the group's leader at each join (``transport/assignor.py``)."""
        self._joined_free = 0 if self._stop.is_set() else self.runner.able(self.config.shed_after)
        return self._joined_free

    def _maybe_shed(self) -> None:
        """Give up partitions this worker cannot serve, and ask for some once it can again.

        Each costs one rebalance of the group, so only tasks longer than ``shed_after`` (0: never)
        count: a worker whose every slot holds such a task rejoins announcing no free slot, and the
        leader gives its partitions to free workers; once one of those tasks ends, a worker holding
        nothing rejoins announcing its free slot.
        """
        if self._stop.is_set():
            return
        able = self.runner.able(self.config.shed_after)
        if not able and self._joined_free > 0 and self.partitions:
            shed = self.config.shed_after
            log.info("%s: every slot busy for %gs; handing partitions to free workers", self.name, shed)
            self._request_rejoin()
        elif able and self._joined_free == 0 and not self.partitions:
            log.info("%s: a slot is free again; asking for partitions", self.name)
            self._request_rejoin()

    def _request_rejoin(self) -> None:
        assert self._consumer is not None
        request_rejoin(self._consumer)
        self._joined_free = -1  # asked; the next join announces the real figure

    def _stranded(self) -> bool:
        """True when Kafka's settled group no longer lists this worker, though it still polls.

        A safety net: a consumer whose group response got lost would otherwise wait in a rebalance
        the group finished without it, polling and heartbeating to Redis, never getting work. (An
        idle worker beyond the partition count, or one that handed its partitions over, is a member.)
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
        self._paused = False
        self._consumer = self._subscribe()

    def _shutdown(self, beat: threading.Thread) -> None:
        self.state = "stopping"
        self.runner.stop()
        self.runner.thread.join(timeout=self.config.shutdown_grace + 10)
        if self._share is not None:
            try:
                self._share.close()  # last acknowledgements; records still held go back at once
            except KafkaError as exc:
                log.warning("%s: share consumer close: %s", self.name, exc)
        if self._consumer is not None:
            try:
                self._commit(final=True)
                self._consumer.close(autocommit=False, timeout_ms=5000)  # leaving the group rebalances now
            except KafkaError as exc:
                log.warning("%s: consumer close: %s", self.name, exc)
        self.runner.close()
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

    def dead_letter(self, delivery: Delivery, exc: Exception, msg: TaskMessage | None) -> None:
        """Park a message no worker can run in the dead-letter topic and record why (runner thread)."""
        reason = exc.reason if isinstance(exc, MalformedMessage) else str(exc)
        raw = delivery.value or b""
        task_id = msg.id if msg is not None else None
        entry = {
            "at": time.time(),
            "reason": reason,
            "worker": self.name,
            "partition": delivery.partition,
            "offset": delivery.offset,
            "deliveries": delivery.delivery_count,
            "task_id": task_id,
            "preview": raw[:200].decode("utf-8", "replace"),
        }
        if not persist(lambda: self.backend.dead_letter(entry), self.name):
            return  # another worker dead-lettered this very message before a rebalance moved it here
        log.warning(
            "%s: dead-lettered %s[%d]@%d: %s", self.name, delivery.topic, delivery.partition, delivery.offset, reason
        )
        try:
            self.broker.publish(raw, topic=self.config.dead_letter_topic, headers=[("reason", reason.encode()[:1000])])
        except ServiceUnavailable as err:
            log.warning("%s: dead-letter topic unavailable (%s); the Redis record stays", self.name, err)
        if msg is not None:
            persist(
                lambda: self.backend.reject(msg.id, msg.op, f"rejected: {reason}", raw.decode("utf-8", "replace")),
                self.name,
            )
        emit(self.hooks, "dead_lettered", self, entry)

    # --- keeping Redis informed -----------------------------------------------------------------
    def _persist_beat(self) -> None:
        persist(self._beat, self.name)

    def _beat(self) -> str:
        """Write this worker's record. With shared dispatch it also carries ``in_flight``, the records
        held now (acquired from the share group, not yet acknowledged: waiting, running or parked;
        ``AckLedger.held``), and ``max_delivery_count``, the highest broker delivery count among
        *those held records* (0 when none): a record handed out before to a worker that died or
        stalled reads 2 or more for as long as this worker holds it. A stopped worker holds none."""
        current = ",".join(msg.id for msg in self.current)
        if self.state in ("idle", "busy"):
            # Read now, not as the consumer thread last set it: a shared worker's consumer thread
            # sleeps while every slot is busy, and its last word was often from before a task began.
            self.state = "busy" if current else "idle"
        partitions = ",".join(str(p) for p in sorted(self.partitions))
        in_flight: int | None = None
        max_count: int | None = None
        if isinstance(self.ledger, AckLedger):
            held = [] if self.state == "stopped" else self.ledger.held()
            counts = self._delivery_counts
            in_flight, max_count = len(held), max((counts.get(key, 1) for key in held), default=0)
        return self.backend.heartbeat(
            self.name,
            self.state,
            current,
            os.getpid(),
            socket.gethostname(),
            partitions,
            self.started_at,
            self.rebalances,
            in_flight=in_flight,
            max_delivery_count=max_count,
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
                if self.config.reaper and time.monotonic() - beating_since > self.config.heartbeat_timeout:
                    self._requeue(self.backend.reap(), "requeued from a dead worker", "Kafka redelivers it")
                self._requeue(self.backend.due_retries(), "retry", "its lease hands it out again")
                self._maybe_reconcile()
                self.backend.prune_index()
                emit(self.hooks, "heartbeat", self)
                warned = False
            except ServiceUnavailable as exc:
                beating_since = time.monotonic()
                if not warned:
                    log.warning("%s: heartbeat failed: %s", self.name, exc)
                    warned = True

    def _maybe_reconcile(self) -> None:
        """Every ``lost_after / 2``, one live worker (whichever asks first) looks for lost deliveries
        (``reconcile.py``), in a thread of its own: it asks Kafka, which may take seconds, and the
        heartbeat must not wait for that."""
        period = self.config.lost_after / 2
        if not period or time.monotonic() < self._next_turn or self._stop.is_set():
            return
        self._next_turn = time.monotonic() + period
        busy = self._reconciler is not None and self._reconciler.is_alive()
        if busy or not self.backend.take_turn(self.name, period):
            return
        self._reconciler = threading.Thread(target=self._reconcile, name="yadtq-reconcile", daemon=True)
        self._reconciler.start()

    def _reconcile(self) -> None:
        try:
            lost = reconcile(self.backend, self.broker, self.config.lost_after)
            self._requeue(lost, "republished the lost delivery of", "the next reconciliation finds it again")
        except (ServiceUnavailable, KafkaError) as exc:
            log.warning("%s: reconciliation: %s; the next turn tries again", self.name, exc)
        except Exception:  # a defect here must not end the worker, nor go unnoticed
            log.exception("%s: reconciliation failed; the next turn tries again", self.name)

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
    """Keeps the worker's view of its partitions, and forgets the messages of partitions it lost.

    A rebalance first revokes every partition, then assigns the new set, and kafka-python keeps the
    fetch position of a partition that comes back to the same worker: its waiting messages will not
    be fetched again, so they must be kept. Only partitions gone for good lose theirs (their next
    owner reads them from the last commit).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.revoked: set[int] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.rebalancing = True
        self.revoked |= {tp.partition for tp in revoked}
        self.worker.partitions = self.worker.partitions - self.revoked

    def on_partitions_assigned(self, assigned: Any) -> None:
        kept = {tp.partition for tp in assigned}
        gone, self.revoked = self.revoked - kept, set()
        self.worker.runner.drop(gone)
        self.worker.ledger.forget(gone)
        self.worker.rebalances += 1
        self.worker.partitions = frozenset(kept)
        self.worker.rebalancing = False
        if self.worker._paused and self.worker._consumer is not None:
            self.worker._consumer.pause(*assigned)
        log.info("%s: partitions %s", self.worker.name, sorted(self.worker.partitions) or "none")
