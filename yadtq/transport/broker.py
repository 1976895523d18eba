"""Kafka, the only door to it: topics, the producer, and the workers' consumers.

Kafka holds what was asked: a task is *accepted* once the broker acknowledged its message
(``acks=all``). Workers read the task topic in one of two ways (``Config.dispatch``):

- **shared** (the default): as one share group (:mod:`yadtq.transport.sharegroup`). The topic has one
  partition, which every member may fetch from; the broker hands each record to one worker at a
  time and the worker acknowledges it once the task's outcome is in Redis.
- **partitioned**: as one consumer group, so each partition belongs to one worker at a time;
  offsets are committed only after the outcome is in Redis.

Either way delivery is at least once, and Redis makes it effectively once (``store/scripts.py``).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic, OffsetSpec
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner import DefaultPartitioner
from kafka.structs import OffsetAndMetadata

from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable
from yadtq.transport.sharegroup import ShareConsumer
from yadtq.transport.sharegroup import admin as share_admin

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a message with this key (a task's id) goes to: its CRC-32 modulo the count.
    Nothing depends on which one, only on ids spreading evenly (ordering is not promised)."""
    return zlib.crc32(key) % partitions


class KeyPartitioner(DefaultPartitioner):
    """:func:`partition_of` for keyed messages. kafka-python's default hashes the key with a
    pure-Python murmur2, 12 µs a message here against 0.2 for ``zlib.crc32``: a twentieth of the
    CPU a submit costs. Keyless messages still go to a random available partition."""

    def partition(
        self, topic: str, key: Any, serialized_key: Any, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        if serialized_key is None:
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        return partition_of(serialized_key, len(cluster.partitions_for_topic(topic)))


class Broker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._topics_ready = False
        self._shared: bool | None = None  # whether the broker has share groups, once asked

    # --- dispatch ------------------------------------------------------------------------------
    def shared_dispatch(self) -> bool:
        """Whether tasks go through the share group: asked for, and the broker has share groups."""
        if self.config.dispatch != "shared":
            return False
        if self._shared is None:
            try:
                with self._admin(int(self.config.submit_timeout * 1000)) as admin:
                    self._shared = share_admin.has_share_groups(admin)
            except KafkaError as exc:
                raise self._unavailable(exc) from None
        return self._shared

    def share_consumer(self, client_id: str) -> ShareConsumer:
        """A worker's share-group member, after setting the group configs it relies on:

        - ``share.auto.offset.reset=earliest``: a new group starts at the oldest task, not after
          the newest (a task submitted before the first worker started must run);
        - ``share.record.lock.duration.ms`` (``share_lock``) and ``share.delivery.count.limit``
          (``max_deliveries``): see their settings;
        - ``share.renew.acknowledge.enable=true``: a worker renews the lock of a task that runs
          longer than it.
        """
        settings = {
            "share.auto.offset.reset": "earliest",
            "share.record.lock.duration.ms": str(int(self.config.share_lock * 1000)),
            "share.delivery.count.limit": str(self.config.max_deliveries),
            "share.renew.acknowledge.enable": "true",
        }
        try:
            with self._admin(int(self.config.submit_timeout * 1000)) as admin:
                answers = share_admin.configure(admin, self.config.share_group_id, settings)
            for group, answer in answers.items():
                if answer != "OK":
                    log.warning("share group %s: the broker refused its settings %s: %s", group, settings, answer)
            return ShareConsumer(
                self.config.share_group_id,
                self.config.task_topic,
                client_id,
                request_timeout=5.0,
                bootstrap_timeout=self.config.submit_timeout,
                **self.config.kafka_options(),
            )
        except KafkaError as exc:
            raise self._unavailable(exc) from None

    def share_group(self) -> dict[str, Any] | None:
        """The share group's state and members (``sharegroup.admin.describe``); None on error."""
        try:
            with self._admin(5_000) as admin:
                return share_admin.describe(admin, self.config.share_group_id)
        except KafkaError:
            return None

    # --- topics --------------------------------------------------------------------------------
    def ensure_topics(self) -> None:
        """Create the task and dead-letter topics, or grow the task topic to ``partitions``.

        With shared dispatch the task topic has one partition: the share group's assignor gives every
        partition to every member only while there are no more partitions than members, and splits
        them otherwise, which would make each worker a queue of its own again."""
        if self._topics_ready:
            return
        timeout_ms = int(self.config.submit_timeout * 1000)
        partitions = 1 if self.shared_dispatch() else self.config.partitions
        wanted = {self.config.task_topic: partitions, self.config.dead_letter_topic: 1}
        try:
            with self._admin(timeout_ms) as admin:
                existing = set(admin.list_topics())
                missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
                if missing:
                    try:
                        admin.create_topics(missing, timeout_ms=timeout_ms)
                    except TopicAlreadyExistsError:
                        pass  # another process won the race
                else:
                    described = admin.describe_topics([self.config.task_topic])
                    have = len(described[0]["partitions"]) if described else partitions
                    if have < partitions:
                        admin.create_partitions({self.config.task_topic: NewPartitions(partitions)})
                    elif have > partitions:
                        log.warning(
                            "%s has %d partitions: share-group members each get a part of them, so a task "
                            "waits for the worker holding its partition; use a namespace of its own",
                            self.config.task_topic,
                            have,
                        )
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        self._topics_ready = True

    def consumed(self) -> int:
        """Messages of the task topic the workers are done with: acknowledged in the share group
        (its lag subtracted from each partition's end), or committed by the consumer group."""
        with self._admin(5_000) as admin:
            if self.shared_dispatch():
                lags = share_admin.start_offsets(admin, self.config.share_group_id, self.config.task_topic)
                ends = self._offsets(admin, {p: OffsetSpec.LATEST for p in lags})
                return sum(ends[p] - max(lag, 0) for p, (_s, lag) in lags.items())
            return sum(self._committed(admin).values())

    def consumed_through(self, at: float) -> bool:
        """Whether the workers are done with every message appended to the task topic before ``at``
        (Unix time, already past by more than any message's time in flight): on each partition, the
        first offset stamped ``at`` or later (or the end, if none is) is at or below the group's
        committed offset, or what the share group has acknowledged. A message sent before ``at``
        has been appended by then, so it lies below."""
        with self._admin(5_000) as admin:
            partitions = admin.describe_topics([self.config.task_topic])[0]["partitions"]
            ids = [part["partition_index"] for part in partitions]
            stamped = self._offsets(admin, {p: int(at * 1000) for p in ids})
            ends = self._offsets(admin, {p: OffsetSpec.LATEST for p in ids})
            if self.shared_dispatch():
                # The broker moves its stored start offset lazily (it read 0 with every record
                # acknowledged), but its lag counts the records not yet acknowledged: the end less
                # that is what the group is done with.
                starts = share_admin.start_offsets(admin, self.config.share_group_id, self.config.task_topic)
                done = {p: ends[p] - lag if lag >= 0 else start for p, (start, lag) in starts.items()}
            else:
                done = self._committed(admin)
        return all(done.get(p, 0) >= (stamped[p] if stamped[p] >= 0 else ends[p]) for p in ids)

    def _committed(self, admin: KafkaAdminClient) -> dict[int, int]:
        offsets = admin.list_group_offsets(self.config.group_id).get(self.config.group_id, {})
        topic = self.config.task_topic
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0}

    def _offsets(self, admin: KafkaAdminClient, specs: dict[int, Any]) -> dict[int, int]:
        """ListOffsets on the task topic's partitions: -1 where no offset matches a timestamp."""
        found = admin.list_partition_offsets(
            {TopicPartition(self.config.task_topic, p): spec for p, spec in specs.items()}, timeout_ms=5_000
        )
        return {tp.partition: answer.offset for tp, answer in found.items()}

    def group_members(self) -> set[str] | None:
        """Client ids (worker names) in the worker group once settled (an empty group counts as settled);
        None while it rebalances, or on error."""
        try:
            with self._admin(5_000) as admin:
                group = admin.describe_groups([self.config.group_id]).get(self.config.group_id) or {}
        except KafkaError:
            return None
        if group.get("group_state") not in ("Stable", "Empty", "Dead"):
            return None  # a rebalance is under way: its member list is not final
        return {member["client_id"] for member in group.get("members", [])}

    def delete_topics(self) -> None:
        """Remove this namespace's groups and topics (tests and lab runs clean up with it). The groups
        go first: deleting a share group also deletes its state for the topic, which the broker
        answered only after a 10 s timeout, now and then, once the topic was gone."""
        with self._admin(10_000) as admin:
            groups = {self.config.group_id, self.config.share_group_id}
            listed = [g["group_id"] for g in admin.list_groups() if g["group_id"] in groups]
            if listed:
                admin.delete_groups(listed)
            existing = set(admin.list_topics())
            ours = (self.config.task_topic, self.config.dead_letter_topic, self.config.events_topic)
            names = [t for t in ours if t in existing]
            if names:
                admin.delete_topics(names, timeout_ms=10_000)
        self._topics_ready = False

    @contextmanager
    def _admin(self, timeout_ms: int) -> Iterator[KafkaAdminClient]:
        """An admin client that gives up after ``timeout_ms`` and is always closed."""
        admin = KafkaAdminClient(
            **self.config.kafka_options(), request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
        try:
            yield admin
        finally:
            admin.close()

    # --- producing -----------------------------------------------------------------------------
    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                # Half of submit_timeout to find the broker, half to get the acknowledgement: the
                # producer itself then reports success or failure within submit_timeout, so a
                # submit that raised never turns into a message delivered later.
                half_ms = max(1_000, int(self.config.submit_timeout * 500))
                try:
                    self._producer = KafkaProducer(
                        **self.config.kafka_options(),
                        acks="all",
                        linger_ms=0,
                        partitioner=KeyPartitioner(),
                        # kafka-python's idempotent producer (its default) can wedge for good after
                        # a broker crash with sends in flight: no later send is ever answered. The
                        # queue needs no producer idempotence: a duplicate message is a redelivery,
                        # and the claim (keyed by task id) runs it once.
                        enable_idempotence=False,
                        max_block_ms=half_ms,
                        request_timeout_ms=half_ms,
                        delivery_timeout_ms=half_ms,
                        bootstrap_timeout_ms=half_ms,
                        max_request_size=max(1_048_576, self.config.max_message_bytes * 2),
                    )
                except KafkaError as exc:
                    raise self._unavailable(exc) from None
            return self._producer

    def send(
        self,
        value: bytes,
        key: str | None = None,
        partition: int | None = None,
        topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Hand one message to the producer and return at once: a future of its acknowledgement.
        It normally fails within the producer's delivery timeout if Kafka does not take the
        message; after a broker crash kafka-python can leave it pending, which is why a caller that
        gives up waiting withdraws the task (``Client._withdraw``) rather than trusting the future."""
        try:
            return self.producer.send(
                topic or self.config.task_topic,
                value=value,
                key=key.encode() if key else None,
                partition=partition,
                headers=headers,
            )
        except KafkaError as exc:
            raise self._unavailable(exc) from None

    def publish(
        self,
        value: bytes,
        key: str | None = None,
        partition: int | None = None,
        topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Send one message and wait for the broker's acknowledgement; returns its partition."""
        future = self.send(value, key, partition, topic, headers)
        return self.acknowledged(future)

    def acknowledged(self, future: Any, timeout: float | None = None) -> int:
        """Wait for a sent message's acknowledgement; its partition, or ServiceUnavailable."""
        try:
            # The producer's own delivery timeout fires first; this is only a backstop.
            wait = self.config.submit_timeout + 5 if timeout is None else timeout
            return int(future.get(timeout=wait).partition)
        except KafkaError as exc:
            raise self._unavailable(exc) from None

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged or has failed."""
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.config.submit_timeout + 5 if timeout is None else timeout)
            except KafkaError as exc:
                raise self._unavailable(exc) from None

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=timeout)
                self._producer = None

    # --- consuming -----------------------------------------------------------------------------
    def consumer(
        self, client_id: str, listener: Any = None, assignor: Any = None, max_poll_records: int = 500
    ) -> KafkaConsumer:
        """The group consumer of a worker: manual commits, ``assignor`` deciding who gets which partition."""
        strategy = {"partition_assignment_strategy": [assignor]} if assignor is not None else {}
        session_ms = int(self.config.session_timeout * 1000)
        consumer = KafkaConsumer(
            **self.config.kafka_options(),
            group_id=self.config.group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            session_timeout_ms=session_ms,
            # A member learns of a rebalance at its next heartbeat, so a worker that joins waits up
            # to one interval for the others: at most a second, even with a long session timeout.
            heartbeat_interval_ms=max(100, min(session_ms // 3, 1000)),
            max_poll_interval_ms=int(self.config.max_poll_interval * 1000),
            fetch_max_wait_ms=100,
            # Short, so a lost response costs seconds: under CPU load kafka-python can drop a
            # SyncGroup response, and the member then waits this long before it rejoins.
            request_timeout_ms=5_000,
            bootstrap_timeout_ms=int(self.config.submit_timeout * 1000),
            allow_auto_create_topics=False,
            **strategy,
        )
        consumer.subscribe([self.config.task_topic], listener=listener)
        return consumer

    def _unavailable(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"Kafka at {self.config.kafka_bootstrap} is unavailable: {type(exc).__name__}: {exc}")


def request_rejoin(consumer: KafkaConsumer) -> None:
    """Make the consumer rejoin its group at its next poll (so that it announces new free slots).

    kafka-python has no public call for this (the Java client's ``enforceRebalance``); its
    coordinator's ``request_rejoin`` is what a metadata change calls.
    """
    consumer._coordinator.request_rejoin()


def commit(
    consumer: KafkaConsumer,
    topic: str,
    points: dict[int, int],
    wait: bool = False,
    refused: Callable[[dict[int, int]], None] | None = None,
) -> Any:
    """Commit ``points`` (partition -> next offset to read); returns the commit's future (None when
    it waited, or had nothing to do).

    A refused commit is harmless: the messages come back to some worker, which sees their tasks
    already finished and skips them. ``refused`` hears of it, so that the points can be offered
    again. Without ``wait`` the commit is sent and the consumer goes on polling.
    """
    if not points:
        return None
    offsets = {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in points.items()}

    def failed(exc: Exception) -> None:
        log.warning("commit of %s failed (%s); those messages may be seen again and skipped", points, exc)
        if refused is not None:
            refused(points)

    try:
        if wait:
            consumer.commit(offsets)
            return None
        future = consumer.commit_async(offsets)
        future.add_errback(failed)
        return future
    except KafkaError as exc:
        failed(exc)
        return None
