"""A share-group consumer (KIP-932) for kafka-python: Kafka's queue, spoken from Python.

A share group is not a consumer group: no partition belongs to one member. The broker hands each
record to one member at a time under an *acquisition lock*, counts its deliveries, and waits for
that member's acknowledgement: ACCEPT (done), RELEASE (give it to someone else now), REJECT (never
deliver it again) or RENEW (keep the lock, on brokers that allow it). A record whose lock expires
unacknowledged (its member was killed, paused or cut off) goes back to the queue by itself.

The client side has three conversations, all on kafka-python's own network layer (one I/O thread,
the connections, SASL/TLS and version negotiation are kafka-python's):

- **membership**, with the group coordinator: ``ShareGroupHeartbeat`` joins (epoch 0), keeps the
  member alive and receives its assignment (which partitions it may fetch from), and leaves
  (epoch -1). A thread of its own beats at the interval the coordinator asks for, so a member whose
  caller is busy stays a member.
- **fetching**, with each partition's leader: ``ShareFetch`` in a *share session* (epoch 0 opens it,
  each later request carries the next epoch, -1 closes it). Every fetch carries the
  acknowledgements gathered since the last one. :meth:`ShareConsumer.poll` asks for at most the
  records its caller can start now, so no record waits, locked, inside a busy member.
- **acknowledging** without fetching: ``ShareAcknowledge``, for a member with no free slot (its
  acknowledgements must not wait for its next fetch) and at close.

What happens on each error the broker can answer is in :data:`REACTIONS`; an error that nothing
can cure (authorization, an invalid request) is raised from :meth:`poll` as :class:`ShareGroupError`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kafka.errors as Errors
from kafka import TopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.record import MemoryRecords

from yadtq.transport.sharegroup.protocol import (
    ACCEPT,
    CLOSE_SESSION,
    GAP,
    JOIN_EPOCH,
    LEAVE_EPOCH,
    OPEN_SESSION,
    RECORD_LIMIT,
    RELEASE,
    RENEW,
    ShareAcknowledgeRequest,
    ShareFetchRequest,
    ShareGroupHeartbeatRequest,
)

log = logging.getLogger(__name__)

#: What the consumer does about each error code (by name) a share-group response can carry.
#: ``rediscover``: find the coordinator again and retry at the next beat; ``rejoin``: join again
#: as a new member epoch (its records' locks run out and go to others); ``retry``: try again after
#: a short pause; ``reset``: forget the share session (open a new one) and refresh metadata;
#: ``expired``: an acknowledgement came too late (the lock had expired, another member has the
#: record): nothing to do, the queue's own state decides what happens to the task; ``fatal``:
#: raised to the caller. INVALID_REQUEST means this client sent something the broker's session
#: state refuses (after a broker restart, say): it starts afresh rather than giving up.
REACTIONS: dict[str, str] = {
    "NotCoordinatorError": "rediscover",
    "CoordinatorNotAvailableError": "rediscover",
    "CoordinatorLoadInProgressError": "retry",
    "UnknownMemberIdError": "rejoin",
    "FencedMemberEpochError": "rejoin",
    "ShareSessionNotFoundError": "reset",
    "InvalidShareSessionEpochError": "reset",
    "NotLeaderForPartitionError": "reset",
    "UnknownTopicOrPartitionError": "reset",
    "UnknownTopicIdError": "reset",
    "FencedLeaderEpochError": "reset",
    "KafkaStorageError": "retry",
    "CorruptRecordError": "retry",
    "UnknownError": "retry",  # kafka-python's name for UNKNOWN_SERVER_ERROR (-1)
    "RequestTimedOutError": "retry",
    "InvalidRecordStateError": "expired",
    "GroupAuthorizationFailedError": "fatal",
    "TopicAuthorizationFailedError": "fatal",
    "GroupMaxSizeReachedError": "fatal",
    "InvalidRequestError": "reset",
    "UnsupportedVersionError": "fatal",
    "InvalidGroupIdError": "fatal",
}
#: Heartbeat interval while a member waits for its first assignment.
JOIN_BEAT = 0.2
#: Pause after a retriable error before the next request.
RETRY_BACKOFF = 0.2


class ShareGroupError(Errors.KafkaError):
    """An error no retry cures: the member cannot go on (its message says which and why)."""


@dataclass(frozen=True)
class ShareRecord:
    """One acquired record. ``delivery_count`` is the broker's: 1 the first time it is handed out."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    delivery_count: int


def reaction(error_code: int) -> tuple[str, type[Errors.KafkaError]]:
    """The reaction to an error code (see :data:`REACTIONS`); unknown errors are retried."""
    error = Errors.for_code(error_code)
    return REACTIONS.get(error.__name__, "retry"), error


def ack_batches(offsets: dict[int, int]) -> list[tuple[int, int, list[int]]]:
    """Acknowledgement batches for ``{offset: type}``: runs of consecutive offsets as
    ``(first, last, types)``, one type per offset (the broker also takes one type for a whole batch,
    but per-offset types need no care about which records share one)."""
    batches: list[tuple[int, int, list[int]]] = []
    for offset in sorted(offsets):
        if batches and batches[-1][1] == offset - 1:
            first, _last, types = batches[-1]
            batches[-1] = (first, offset, [*types, offsets[offset]])
        else:
            batches.append((offset, offset, [offsets[offset]]))
    return batches


def _fetch_topics(topic_id: Any, partitions: Iterable[int], acks: dict[int, dict[int, int]]) -> list[Any]:
    topic = ShareFetchRequest.FetchTopic
    batch = topic.FetchPartition.AcknowledgementBatch
    return [
        topic(
            topic_id=topic_id,
            partitions=[
                topic.FetchPartition(
                    partition_index=p,
                    acknowledgement_batches=[batch(*b) for b in ack_batches(acks.get(p, {}))],
                )
                for p in sorted(partitions)
            ],
        )
    ]


def _ack_topics(topic_id: Any, acks: dict[int, dict[int, int]]) -> list[Any]:
    topic = ShareAcknowledgeRequest.AcknowledgeTopic
    batch = topic.AcknowledgePartition.AcknowledgementBatch
    return [
        topic(
            topic_id=topic_id,
            partitions=[
                topic.AcknowledgePartition(
                    partition_index=p, acknowledgement_batches=[batch(*b) for b in ack_batches(a)]
                )
                for p, a in sorted(acks.items())
            ],
        )
    ]


class _Session:
    """The share session with one partition leader: its epoch and the partitions it holds."""

    def __init__(self) -> None:
        self.epoch = OPEN_SESSION
        self.partitions: set[int] = set()

    def next_epoch(self) -> None:
        self.epoch = 1 if self.epoch >= 2**31 - 1 else self.epoch + 1


class ShareConsumer:
    """One member of a share group, reading one topic.

    Not thread-safe, except :meth:`acknowledge`, which any thread may call: its acknowledgements go
    out with the next :meth:`poll` or :meth:`flush` of the owning thread.
    """

    def __init__(
        self,
        group_id: str,
        topic: str,
        client_id: str,
        *,
        request_timeout: float = 5.0,
        bootstrap_timeout: float = 10.0,
        **kafka_options: Any,
    ) -> None:
        self.group_id = group_id
        self.topic = topic
        self.client_id = client_id
        #: Kept for the member's lifetime, as the protocol asks: a rejoin reuses it.
        self.member_id = uuid.uuid4().hex[:22]
        self.member_epoch = JOIN_EPOCH
        self.heartbeat_interval = 1.0
        self.lock_timeout: float | None = None  # the broker's acquisition lock, from each fetch
        self._timeout_ms = int(request_timeout * 1000)
        self._client = KafkaNetClient(client_id=client_id, request_timeout_ms=self._timeout_ms, **kafka_options)
        self._manager = self._client._manager
        self._net = self._client._net
        self._net.start()
        try:
            self._manager.bootstrap(int(bootstrap_timeout * 1000))
        except Exception:
            self._net.stop()
            raise
        self._coordinator: int | None = None
        self._assignment: frozenset[int] = frozenset()
        self._sessions: dict[int, _Session] = defaultdict(_Session)  # leader node id -> session
        self._acks: dict[int, dict[int, int]] = defaultdict(dict)  # partition -> {offset: type}
        self._ack_lock = threading.Lock()
        self._fatal: Exception | None = None
        self._closed = threading.Event()
        self._member_lock = threading.Lock()
        self._beat_now = threading.Event()
        self._beater = threading.Thread(target=self._beat_loop, name=f"share-heartbeat-{client_id}", daemon=True)
        self._beater.start()

    # --- the caller's side ----------------------------------------------------------------------
    @property
    def assignment(self) -> frozenset[int]:
        """Partitions of the topic this member may fetch from (every member shares them)."""
        return self._assignment

    def wait_assigned(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until the coordinator has given this member its partitions."""
        deadline = time.monotonic() + timeout
        while not self._assignment and self._fatal is None and time.monotonic() < deadline:
            self._beat_now.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        if self._fatal is not None:
            raise self._fatal
        return bool(self._assignment)

    def poll(self, max_records: int, timeout: float) -> list[ShareRecord]:
        """Acquire up to ``max_records`` records, waiting up to ``timeout`` seconds for the first.

        Pending acknowledgements go with the fetch. With ``max_records`` 0 nothing is fetched: the
        acknowledgements are sent alone, and the call returns at once.
        """
        if self._fatal is not None:
            raise self._fatal
        if max_records <= 0:
            self.flush()
            return []
        if not self._assignment:
            self.flush()
            self._beat_now.wait(timeout)  # woken when an assignment arrives
            self._beat_now.clear()
            return []
        records = self._run(self._fetch, max_records, timeout)
        if len(records) > max_records:  # a broker without record-limit mode rounds up to batches
            for extra in records[max_records:]:
                self.acknowledge(extra.partition, extra.offset, RELEASE)
            records = records[:max_records]
        return records

    def acknowledge(self, partition: int, offset: int, kind: int = ACCEPT) -> None:
        """Queue an acknowledgement; it is sent with the next fetch or :meth:`flush`. A later one for
        the same record replaces an earlier one not yet sent (a RENEW never replaces a final type)."""
        with self._ack_lock:
            pending = self._acks[partition]
            if kind == RENEW and pending.get(offset, RENEW) != RENEW:
                return
            pending[offset] = kind

    def renew(self, records: Iterable[tuple[int, int]]) -> None:
        """Ask to keep the locks of ``(partition, offset)`` records that are still being worked on."""
        for partition, offset in records:
            self.acknowledge(partition, offset, RENEW)

    def flush(self) -> None:
        """Send pending acknowledgements now, without fetching (ShareAcknowledge)."""
        if self.pending():
            self._run(self._acknowledge_alone)

    def close(self, timeout: float = 5.0) -> None:
        """Send the last acknowledgements, close the share sessions (the broker releases every record
        still acquired, so the others get them at once) and leave the group."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._beat_now.set()
        try:
            if self._fatal is None:
                self._run(self._close_sessions, timeout=timeout)
                self._run(self._leave, timeout=timeout)
        except Errors.KafkaError as exc:
            log.info("%s: leaving the share group: %s", self.client_id, exc)
        finally:
            self._beater.join(timeout=timeout)
            self._client.close()
            self._net.stop()

    # --- membership -----------------------------------------------------------------------------
    def _beat_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._run(self._heartbeat)
            except ShareGroupError as exc:  # before KafkaError, which it is too
                log.error("%s: %s", self.client_id, exc)
                self._fatal = exc
                self._beat_now.set()
                return
            except Errors.KafkaError as exc:
                log.info("%s: share-group heartbeat: %s", self.client_id, exc)
                self._coordinator = None
            # A new member gets its assignment at a later beat than its join: ask again soon rather
            # than after a whole interval (5 s by default), so a worker starts taking tasks at once.
            self._closed.wait(self.heartbeat_interval if self._assignment else min(self.heartbeat_interval, JOIN_BEAT))

    async def _find_coordinator(self) -> int:
        if self._coordinator is not None:
            return self._coordinator
        request = FindCoordinatorRequest(key_type=0, coordinator_keys=[self.group_id], min_version=4)
        response = await self._manager.send(request, request_timeout_ms=self._timeout_ms)
        found = response.coordinators[0]
        if found.error_code:
            raise Errors.for_code(found.error_code)(found.error_message or "finding the group coordinator")
        self._coordinator = int(
            self._manager.cluster.add_coordinator(found, 0, self.group_id, synthesize_node_id=False)
        )
        return self._coordinator

    async def _heartbeat(self) -> None:
        node = await self._find_coordinator()
        with self._member_lock:
            epoch = self.member_epoch
        joining = epoch == JOIN_EPOCH
        request = ShareGroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            rack_id=None,
            subscribed_topic_names=[self.topic] if joining else None,
        )
        response = await self._manager.send(request, node_id=node, request_timeout_ms=self._timeout_ms)
        if response.error_code:
            what, error = reaction(response.error_code)
            message = f"share-group heartbeat: {error.__name__}: {response.error_message or ''}"
            if what == "fatal":
                raise ShareGroupError(message)
            if what == "rediscover":
                self._coordinator = None
            elif what == "rejoin":
                log.warning("%s: %s; joining again", self.client_id, message)
                with self._member_lock:
                    self.member_epoch = JOIN_EPOCH
                self._set_assignment(frozenset())
            return
        with self._member_lock:
            if self.member_epoch == epoch:  # not left or rejoined meanwhile
                self.member_epoch = response.member_epoch
        self.heartbeat_interval = max(0.1, response.heartbeat_interval_ms / 1000)
        if response.assignment is not None:
            await self._refresh_metadata()
            topic_id = self._manager.cluster.topic_id(self.topic)
            partitions = {
                p for tp in response.assignment.topic_partitions if tp.topic_id == topic_id for p in tp.partitions
            }
            self._set_assignment(frozenset(partitions))

    def _set_assignment(self, partitions: frozenset[int]) -> None:
        if partitions != self._assignment:
            log.info("%s: share-group partitions %s", self.client_id, sorted(partitions) or "none")
        self._assignment = partitions
        if partitions:
            self._beat_now.set()

    async def _leave(self) -> None:
        node = await self._find_coordinator()
        with self._member_lock:
            self.member_epoch = LEAVE_EPOCH
        request = ShareGroupHeartbeatRequest(
            group_id=self.group_id, member_id=self.member_id, member_epoch=LEAVE_EPOCH, rack_id=None
        )
        await self._manager.send(request, node_id=node, request_timeout_ms=self._timeout_ms)

    # --- fetching and acknowledging -----------------------------------------------------------
    async def _refresh_metadata(self) -> None:
        request = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=self.topic)],
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )
        response = await self._manager.send(request, request_timeout_ms=self._timeout_ms)
        self._manager.cluster.update_metadata(response)

    def _leaders(self, partitions: Iterable[int]) -> dict[int, list[int]]:
        """Assigned (or acknowledged) partitions by their leader's node id."""
        out: dict[int, list[int]] = defaultdict(list)
        for p in partitions:
            leader = self._manager.cluster.leader_for_partition(TopicPartition(self.topic, p))
            if leader is not None and leader >= 0:
                out[leader].append(p)
        return out

    def pending(self) -> bool:
        """Whether acknowledgements are waiting to be sent."""
        with self._ack_lock:
            return any(self._acks.values())

    def _take_acks(self, partitions: Iterable[int]) -> dict[int, dict[int, int]]:
        with self._ack_lock:
            return {p: self._acks.pop(p) for p in list(partitions) if self._acks.get(p)}

    def _requeue_acks(self, taken: dict[int, dict[int, int]]) -> None:
        """Acknowledgements whose request failed as a whole: offer them again with the next one."""
        with self._ack_lock:
            for p, acks in taken.items():
                for offset, kind in acks.items():
                    self._acks[p].setdefault(offset, kind)

    async def _fetch(self, max_records: int, timeout: float) -> list[ShareRecord]:
        topic_id = self._manager.cluster.topic_id(self.topic)
        if topic_id is None:
            await self._refresh_metadata()
            return []
        with self._ack_lock:
            acked = {p for p, a in self._acks.items() if a}
        records: list[ShareRecord] = []
        for node, partitions in self._leaders(set(self._assignment) | acked).items():
            session = self._sessions[node]
            fetching = set(partitions) & self._assignment
            acks = self._take_acks(partitions)
            renewing = any(RENEW in a.values() for a in acks.values())
            if session.epoch == OPEN_SESSION and acks:
                # The request that opens a session may carry no acknowledgement (the broker refuses it
                # whole, INVALID_REQUEST): those records were acquired in a session that is gone, and
                # went back to the group with it.
                log.info("%s: %d acknowledgements dropped with a lost share session", self.client_id, len(acks))
                acks = {}
            elif renewing:  # a fetch carries no RENEW: send them alone, then fetch
                await self._send_acks(node, acks)
                acks = {}
            forgotten = session.partitions - fetching if session.epoch != OPEN_SESSION else set()
            request = ShareFetchRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                share_session_epoch=session.epoch,
                max_wait_ms=int(timeout * 1000),
                min_bytes=1,
                max_bytes=8 * 1024 * 1024,
                max_records=max_records - len(records),
                batch_size=max_records - len(records),
                share_acquire_mode=RECORD_LIMIT,
                is_renew_ack=False,
                topics=_fetch_topics(topic_id, fetching | set(acks), acks),
                forgotten_topics_data=[
                    ShareFetchRequest.ForgottenTopic(topic_id=topic_id, partitions=sorted(forgotten))
                ]
                if forgotten
                else [],
            )
            try:
                response = await self._manager.send(
                    request, node_id=node, request_timeout_ms=self._timeout_ms + int(timeout * 1000)
                )
            except Errors.KafkaError:
                self._requeue_acks(acks)
                self._sessions.pop(node, None)  # the connection may be gone: open a new session
                raise
            if response.error_code:
                await self._session_error(node, response.error_code, response.error_message)
                continue
            session.next_epoch()
            session.partitions = fetching
            self.lock_timeout = response.acquisition_lock_timeout_ms / 1000
            records.extend(await self._acquired(response))
        return records

    async def _acquired(self, response: Any) -> list[ShareRecord]:
        out: list[ShareRecord] = []
        for topic in response.responses:
            for part in topic.partitions:
                if part.acknowledge_error_code:
                    self._partition_error(part.partition_index, part.acknowledge_error_code, "acknowledgement")
                if part.error_code:
                    self._partition_error(part.partition_index, part.error_code, part.error_message or "fetch")
                    continue
                if not part.acquired_records:
                    continue
                counts: dict[int, int] = {}
                for acquired in part.acquired_records:
                    for offset in range(acquired.first_offset, acquired.last_offset + 1):
                        counts[offset] = acquired.delivery_count
                seen = set()
                for record in _records(part.records, counts.keys()):
                    if record.offset not in seen:
                        seen.add(record.offset)
                        out.append(
                            ShareRecord(
                                self.topic,
                                part.partition_index,
                                record.offset,
                                record.key,
                                record.value,
                                counts[record.offset],
                            )
                        )
                for offset in counts.keys() - seen:  # control records, or compacted away
                    self.acknowledge(part.partition_index, offset, GAP)
        return out

    async def _acknowledge_alone(self) -> None:
        with self._ack_lock:
            partitions = [p for p, a in self._acks.items() if a]
        for node, parts in self._leaders(partitions).items():
            acks = self._take_acks(parts)
            if acks:
                await self._send_acks(node, acks)

    async def _send_acks(self, node: int, acks: dict[int, dict[int, int]]) -> None:
        session = self._sessions[node]
        if session.epoch == OPEN_SESSION:
            # Acknowledgements need a session; it is opened by a fetch. Without one (it was reset),
            # these records' locks were dropped with the old session: they are someone else's now.
            log.info("%s: %d acknowledgements dropped with a reset share session", self.client_id, len(acks))
            return
        topic_id = self._manager.cluster.topic_id(self.topic)
        renewing = any(RENEW in a.values() for a in acks.values())
        request = ShareAcknowledgeRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            share_session_epoch=session.epoch,
            is_renew_ack=renewing,
            topics=_ack_topics(topic_id, acks),
        )
        if renewing and self._manager.broker_version_data.api_version(ShareAcknowledgeRequest) < 2:
            return  # the broker cannot renew: the queue's claim in Redis covers the long task
        try:
            response = await self._manager.send(request, node_id=node, request_timeout_ms=self._timeout_ms)
        except Errors.KafkaError:
            self._requeue_acks({p: {o: k for o, k in a.items() if k != RENEW} for p, a in acks.items()})
            self._sessions.pop(node, None)
            raise
        if response.error_code:
            await self._session_error(node, response.error_code, response.error_message)
            return
        session.next_epoch()
        for topic in response.responses:
            for part in topic.partitions:
                if part.error_code:
                    self._partition_error(part.partition_index, part.error_code, part.error_message or "acknowledge")

    async def _close_sessions(self) -> None:
        await self._acknowledge_alone()
        for node, session in list(self._sessions.items()):
            if session.epoch == OPEN_SESSION:
                continue
            request = ShareAcknowledgeRequest(
                group_id=self.group_id, member_id=self.member_id, share_session_epoch=CLOSE_SESSION, topics=[]
            )
            await self._manager.send(request, node_id=node, request_timeout_ms=self._timeout_ms)
        self._sessions.clear()

    async def _session_error(self, node: int, code: int, message: str | None) -> None:
        """A request refused as a whole: open a new session next time (its acknowledgements cannot
        go on a new one: the records went back to the group with the old session)."""
        what, error = reaction(code)
        text = f"{error.__name__}: {message or ''}"
        if what == "fatal":
            self._fatal = ShareGroupError(f"share fetch refused: {text}")
            raise self._fatal
        log.warning("%s: share session with node %s: %s (%s)", self.client_id, node, text, what)
        self._sessions.pop(node, None)
        self._manager.cluster.request_update()
        if what != "reset":
            await self._net.sleep(RETRY_BACKOFF)

    def _partition_error(self, partition: int, code: int, what_for: str) -> None:
        what, error = reaction(code)
        if what == "expired":
            log.info("%s: partition %d: %s came after the lock expired", self.client_id, partition, what_for)
        elif what == "fatal":
            self._fatal = ShareGroupError(f"partition {partition}: {error.__name__} ({what_for})")
        else:
            log.info("%s: partition %d: %s (%s); %s", self.client_id, partition, error.__name__, what_for, what)
            if what == "reset":
                self._sessions.clear()
                self._manager.cluster.request_update()

    def _run(self, coro: Any, *args: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on kafka-python's I/O thread and wait for it (within a deadline)."""
        deadline_ms = int((timeout or 0) * 1000) or self._timeout_ms * 3
        return self._manager.run(self._bounded, deadline_ms, coro, *args)

    async def _bounded(self, deadline_ms: int, coro: Any, *args: Any) -> Any:
        return await self._manager.wait_for(self._manager.call_soon(coro, *args), deadline_ms)


def _records(data: Any, wanted: Iterable[int]) -> list[Any]:
    """The records at the ``wanted`` offsets in a partition's ``records`` bytes (kafka-python's own
    record parser). The broker sends whole batches, so a client that submitted many tasks at once
    gets hundreds of records around the one acquired: batches without a wanted offset are skipped
    unread, and a batch is read no further than the last wanted offset."""
    wanted = set(wanted)
    if not data or not wanted:
        return []
    low, high = min(wanted), max(wanted)
    out = []
    memory = MemoryRecords(bytes(data))
    while memory.has_next():
        batch = memory.next_batch()
        if batch is None:
            break
        if batch.last_offset < low or batch.base_offset > high:
            continue
        for record in batch:
            if record.offset > high:
                break
            if record.offset in wanted:
                out.append(record)
    return out
