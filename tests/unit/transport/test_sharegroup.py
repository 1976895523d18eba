"""The share-group client's pure parts: acknowledgement batches, error reactions, the message
definitions (encoded and decoded back with kafka-python's own codecs) and what a ShareFetch response
becomes (the acquired records only, with their delivery counts, and the gaps).

No services: everything here is bytes in memory. One test compares the definitions with Kafka's
published ones when the kafka-clients sources jar happens to be in the local Maven repository.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import kafka.errors as Errors
import pytest
from kafka.record.memory_records import MemoryRecordsBuilder

from yadtq.transport.sharegroup import protocol
from yadtq.transport.sharegroup.consumer import (
    REACTIONS,
    ShareConsumer,
    ShareRecord,
    _ack_topics,
    _fetch_topics,
    ack_batches,
    reaction,
)
from yadtq.transport.sharegroup.protocol import (
    ACCEPT,
    GAP,
    RECORD_LIMIT,
    REJECT,
    RELEASE,
    RENEW,
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse,
    ShareAcknowledgeRequest,
    ShareAcknowledgeResponse,
    ShareFetchRequest,
    ShareFetchResponse,
    ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
    ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
)

TOPIC_ID = uuid.UUID("6f1c1d7e-2b9a-4c53-9d0e-5a4f3b2c1d0e")


# --- acknowledgement batches --------------------------------------------------------------------
def test_ack_batches_empty() -> None:
    assert ack_batches({}) == []


def test_ack_batches_joins_consecutive_offsets_and_keeps_each_type() -> None:
    acks = {5: ACCEPT, 6: RELEASE, 7: ACCEPT, 9: REJECT, 10: RENEW, 20: GAP}
    assert ack_batches(acks) == [
        (5, 7, [ACCEPT, RELEASE, ACCEPT]),
        (9, 10, [REJECT, RENEW]),
        (20, 20, [GAP]),
    ]


def test_ack_batches_sorts_unsorted_input() -> None:
    acks = {12: RELEASE, 3: ACCEPT, 11: ACCEPT, 4: REJECT, 0: ACCEPT}
    assert ack_batches(acks) == [(0, 0, [ACCEPT]), (3, 4, [ACCEPT, REJECT]), (11, 12, [ACCEPT, RELEASE])]


def test_ack_batches_one_type_per_offset_over_a_long_run() -> None:
    acks = {offset: (ACCEPT if offset % 3 else RELEASE) for offset in reversed(range(100, 200))}
    [(first, last, types)] = ack_batches(acks)
    assert (first, last) == (100, 199)
    assert types == [acks[offset] for offset in range(100, 200)]


# --- error reactions ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Errors.InvalidRecordStateError, "expired"),
        (Errors.ShareSessionNotFoundError, "reset"),
        (Errors.InvalidShareSessionEpochError, "reset"),
        (Errors.GroupAuthorizationFailedError, "fatal"),
        (Errors.TopicAuthorizationFailedError, "fatal"),
        (Errors.NotCoordinatorError, "rediscover"),
        (Errors.FencedMemberEpochError, "rejoin"),
        (Errors.UnknownMemberIdError, "rejoin"),
        (Errors.CoordinatorLoadInProgressError, "retry"),
        (Errors.InvalidRequestError, "reset"),
    ],
)
def test_reaction_by_code(error: type[Errors.KafkaError], expected: str) -> None:
    assert reaction(error.errno) == (expected, error)


def test_reaction_to_an_unknown_code_is_retry() -> None:
    what, error = reaction(31_999)
    assert what == "retry"
    assert issubclass(error, Errors.KafkaError)
    assert reaction(-1)[0] == "retry"  # UNKNOWN_SERVER_ERROR


def test_every_reaction_names_a_kafka_python_error() -> None:
    """A key that is no kafka-python error class name is never looked up: its entry would be dead."""
    missing = [name for name in REACTIONS if not isinstance(getattr(Errors, name, None), type)]
    assert missing == []
    assert set(REACTIONS.values()) <= {"rediscover", "rejoin", "retry", "reset", "expired", "fatal"}


# --- the messages, encoded and decoded back -----------------------------------------------------
def round_trip(message: Any, version: int) -> Any:
    data = message.encode(version=version)
    assert isinstance(data, bytes | bytearray | memoryview)
    decoded = type(message).decode(bytes(data), version=version)
    assert decoded.to_dict() == message.to_dict()
    return decoded


def test_api_keys_and_versions() -> None:
    expected = {
        ShareGroupHeartbeatRequest: (76, 1),
        ShareGroupDescribeRequest: (77, 1),
        ShareFetchRequest: (78, 2),
        ShareAcknowledgeRequest: (79, 2),
        DescribeShareGroupOffsetsRequest: (90, 1),
    }
    for cls, (key, max_version) in expected.items():
        assert (cls.API_KEY, cls.max_version, cls.is_request()) == (key, max_version, True)
    for cls in (ShareGroupHeartbeatResponse, ShareFetchResponse, ShareAcknowledgeResponse):
        assert not cls.is_request()


@pytest.mark.parametrize("topics", [["tasks"], None])
def test_heartbeat_request_round_trip(topics: list[str] | None) -> None:
    request = ShareGroupHeartbeatRequest(
        group_id="g", member_id="m" * 22, member_epoch=0, rack_id=None, subscribed_topic_names=topics
    )
    decoded = round_trip(request, 1)
    assert decoded.subscribed_topic_names == topics
    assert decoded.rack_id is None


def test_heartbeat_response_round_trip_with_an_assignment() -> None:
    assignment = ShareGroupHeartbeatResponse.Assignment
    response = ShareGroupHeartbeatResponse(
        throttle_time_ms=0,
        error_code=0,
        error_message=None,
        member_id="abc",
        member_epoch=7,
        heartbeat_interval_ms=5000,
        assignment=assignment(topic_partitions=[assignment.TopicPartitions(topic_id=TOPIC_ID, partitions=[0, 2])]),
    )
    decoded = round_trip(response, 1)
    assert decoded.assignment.topic_partitions[0].topic_id == TOPIC_ID
    assert decoded.assignment.topic_partitions[0].partitions == [0, 2]
    no_assignment = ShareGroupHeartbeatResponse(
        throttle_time_ms=0,
        error_code=0,
        error_message=None,
        member_id=None,
        member_epoch=8,
        heartbeat_interval_ms=5000,
        assignment=None,
    )
    assert round_trip(no_assignment, 1).assignment is None


def test_describe_round_trip() -> None:
    round_trip(ShareGroupDescribeRequest(group_ids=["a", "b"], include_authorized_operations=False), 1)
    group = ShareGroupDescribeResponse.DescribedGroup
    member = group.Member
    assignment = member.Assignment
    response = ShareGroupDescribeResponse(
        throttle_time_ms=0,
        groups=[
            group(
                error_code=0,
                error_message=None,
                group_id="g",
                group_state="Stable",
                group_epoch=3,
                assignment_epoch=3,
                assignor_name="simple",
                members=[
                    member(
                        member_id="m1",
                        rack_id=None,
                        member_epoch=3,
                        client_id="c1",
                        client_host="/127.0.0.1",
                        subscribed_topic_names=["t"],
                        assignment=assignment(
                            topic_partitions=[
                                assignment.TopicPartitions(topic_id=TOPIC_ID, topic_name="t", partitions=[0])
                            ]
                        ),
                    )
                ],
                authorized_operations=-(2**31),
            )
        ],
    )
    decoded = round_trip(response, 1)
    assert decoded.groups[0].members[0].assignment.topic_partitions[0].topic_name == "t"


def fetch_request(acks: dict[int, dict[int, int]]) -> Any:
    return ShareFetchRequest(
        group_id="g",
        member_id="m",
        share_session_epoch=3,
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=1 << 20,
        max_records=5,
        batch_size=5,
        share_acquire_mode=RECORD_LIMIT,
        is_renew_ack=False,
        topics=_fetch_topics(TOPIC_ID, [1, 0], acks),
        forgotten_topics_data=[ShareFetchRequest.ForgottenTopic(topic_id=TOPIC_ID, partitions=[4])],
    )


def test_fetch_request_v2_round_trip_carries_acknowledgements() -> None:
    decoded = round_trip(fetch_request({0: {7: ACCEPT, 5: RELEASE, 6: ACCEPT, 9: REJECT}}), 2)
    assert (decoded.max_records, decoded.batch_size, decoded.share_acquire_mode) == (5, 5, RECORD_LIMIT)
    [topic] = decoded.topics
    assert topic.topic_id == TOPIC_ID
    assert [p.partition_index for p in topic.partitions] == [0, 1]
    batches = [
        (b.first_offset, b.last_offset, b.acknowledge_types) for b in topic.partitions[0].acknowledgement_batches
    ]
    assert batches == [(5, 7, [RELEASE, ACCEPT, ACCEPT]), (9, 9, [REJECT])]
    assert topic.partitions[1].acknowledgement_batches == []
    assert decoded.forgotten_topics_data[0].partitions == [4]


def test_fetch_request_v1_has_no_v2_fields() -> None:
    v1 = fetch_request({}).encode(version=1)
    v2 = fetch_request({}).encode(version=2)
    assert len(v2) - len(v1) == 2  # ShareAcquireMode (int8) and IsRenewAck (bool)
    decoded = ShareFetchRequest.decode(bytes(v1), version=1)
    assert (decoded.max_records, decoded.batch_size) == (5, 5)


@pytest.mark.parametrize("version", [1, 2])
def test_acknowledge_request_round_trip(version: int) -> None:
    request = ShareAcknowledgeRequest(
        group_id="g",
        member_id="m",
        share_session_epoch=4,
        is_renew_ack=version == 2,
        topics=_ack_topics(TOPIC_ID, {2: {11: RENEW, 10: RENEW}, 0: {3: ACCEPT}}),
    )
    decoded = round_trip(request, version)
    partitions = decoded.topics[0].partitions
    assert [p.partition_index for p in partitions] == [0, 2]
    assert partitions[1].acknowledgement_batches[0].acknowledge_types == [RENEW, RENEW]
    assert decoded.is_renew_ack is (version == 2)


def test_acknowledge_response_round_trip() -> None:
    topic = ShareAcknowledgeResponse.ShareAcknowledgeTopicResponse
    part = topic.PartitionData
    response = ShareAcknowledgeResponse(
        throttle_time_ms=0,
        error_code=0,
        error_message=None,
        acquisition_lock_timeout_ms=15000,
        responses=[
            topic(
                topic_id=TOPIC_ID,
                partitions=[
                    part(
                        partition_index=0,
                        error_code=Errors.InvalidRecordStateError.errno,
                        error_message="too late",
                        current_leader=part.LeaderIdAndEpoch(leader_id=1, leader_epoch=0),
                    )
                ],
            )
        ],
        node_endpoints=[],
    )
    assert round_trip(response, 2).responses[0].partitions[0].error_code == Errors.InvalidRecordStateError.errno


@pytest.mark.parametrize("version", [0, 1])
def test_describe_offsets_round_trip(version: int) -> None:
    group = DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestGroup
    round_trip(DescribeShareGroupOffsetsRequest(groups=[group(group_id="g", topics=None)]), version)
    rgroup = DescribeShareGroupOffsetsResponse.DescribeShareGroupOffsetsResponseGroup
    rtopic = rgroup.DescribeShareGroupOffsetsResponseTopic
    rpart = rtopic.DescribeShareGroupOffsetsResponsePartition
    response = DescribeShareGroupOffsetsResponse(
        throttle_time_ms=0,
        groups=[
            rgroup(
                group_id="g",
                topics=[
                    rtopic(
                        topic_name="t",
                        topic_id=TOPIC_ID,
                        partitions=[
                            rpart(
                                partition_index=0,
                                start_offset=42,
                                leader_epoch=0,
                                lag=8,
                                error_code=0,
                                error_message=None,
                            )
                        ],
                    )
                ],
                error_code=0,
                error_message=None,
            )
        ],
    )
    data = response.encode(version=version)
    decoded = DescribeShareGroupOffsetsResponse.decode(bytes(data), version=version)
    part = decoded.groups[0].topics[0].partitions[0]
    assert part.start_offset == 42
    assert part.lag == (8 if version == 1 else -1)  # v0 has no Lag: its default


# --- a ShareFetch response: what the consumer makes of it ----------------------------------------
def records_batch(base_offset: int, count: int) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20, offset=base_offset)
    for i in range(count):
        builder.append(timestamp=None, key=f"k{base_offset + i}".encode(), value=f"v{base_offset + i}".encode())
    builder.close()
    return bytes(builder.buffer())


def fetch_response(partitions: list[dict[str, Any]]) -> Any:
    topic = ShareFetchResponse.ShareFetchableTopicResponse
    part = topic.PartitionData
    acquired = part.AcquiredRecords
    built = []
    for p in partitions:
        built.append(
            part(
                partition_index=p["partition"],
                error_code=p.get("error_code", 0),
                error_message=None,
                acknowledge_error_code=p.get("acknowledge_error_code", 0),
                acknowledge_error_message=None,
                current_leader=part.LeaderIdAndEpoch(leader_id=1, leader_epoch=0),
                records=p.get("records", b""),
                acquired_records=[
                    acquired(first_offset=first, last_offset=last, delivery_count=count)
                    for first, last, count in p.get("acquired", [])
                ],
            )
        )
    response = ShareFetchResponse(
        throttle_time_ms=0,
        error_code=0,
        error_message=None,
        acquisition_lock_timeout_ms=30000,
        responses=[topic(topic_id=TOPIC_ID, partitions=built)],
        node_endpoints=[],
    )
    # Over the wire and back, as the consumer receives it.
    return ShareFetchResponse.decode(bytes(response.encode(version=2)), version=2)


class Member:
    """Stand-in for the ShareConsumer that ``_acquired`` runs on: it records what it is told."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.acks: list[tuple[int, int, int]] = []
        self.errors: list[tuple[int, int, str]] = []

    def acknowledge(self, partition: int, offset: int, kind: int = ACCEPT) -> None:
        self.acks.append((partition, offset, kind))

    def _partition_error(self, partition: int, code: int, what_for: str) -> None:
        self.errors.append((partition, code, what_for))


def acquired(response: Any) -> tuple[list[ShareRecord], Member]:
    member = Member("tasks")
    return asyncio.run(ShareConsumer._acquired(member, response)), member  # type: ignore[arg-type]


def test_fetch_response_keeps_only_acquired_records_with_their_delivery_counts() -> None:
    # A batch of offsets 10..19; the broker acquired 10-12 (first delivery) and 15-16 (third), and
    # 20-21, which this batch does not hold (a control batch, or compacted away): gaps.
    response = fetch_response(
        [{"partition": 3, "records": records_batch(10, 10), "acquired": [(10, 12, 1), (15, 16, 3), (20, 21, 1)]}]
    )
    assert response.acquisition_lock_timeout_ms == 30000
    records, member = acquired(response)
    assert [(r.offset, r.delivery_count) for r in records] == [(10, 1), (11, 1), (12, 1), (15, 3), (16, 3)]
    assert all(r.topic == "tasks" and r.partition == 3 for r in records)
    assert [(r.key, r.value) for r in records][3] == (b"k15", b"v15")
    assert sorted(member.acks) == [(3, 20, GAP), (3, 21, GAP)]
    assert member.errors == []


def test_fetch_response_over_two_batches_and_partitions() -> None:
    response = fetch_response(
        [
            {"partition": 0, "records": records_batch(0, 3) + records_batch(3, 3), "acquired": [(2, 4, 2)]},
            {"partition": 1, "records": records_batch(100, 2), "acquired": []},  # nothing acquired
        ]
    )
    records, member = acquired(response)
    assert [(r.partition, r.offset, r.value, r.delivery_count) for r in records] == [
        (0, 2, b"v2", 2),
        (0, 3, b"v3", 2),
        (0, 4, b"v4", 2),
    ]
    assert member.acks == []


def test_fetch_response_partition_errors() -> None:
    response = fetch_response(
        [
            # A fetch error: its records (had there been any) are not handed out.
            {
                "partition": 0,
                "error_code": Errors.NotLeaderForPartitionError.errno,
                "records": records_batch(0, 2),
                "acquired": [(0, 1, 1)],
            },
            # An acknowledgement error beside a good fetch: the records still come.
            {
                "partition": 1,
                "acknowledge_error_code": Errors.InvalidRecordStateError.errno,
                "records": records_batch(5, 1),
                "acquired": [(5, 5, 1)],
            },
        ]
    )
    records, member = acquired(response)
    assert [(r.partition, r.offset) for r in records] == [(1, 5)]
    assert member.errors == [
        (0, Errors.NotLeaderForPartitionError.errno, "fetch"),
        (1, Errors.InvalidRecordStateError.errno, "acknowledgement"),
    ]
    assert member.acks == []


# --- the definitions against Kafka's published ones -----------------------------------------------
SOURCES_JAR = Path.home() / ".m2/repository/org/apache/kafka/kafka-clients/4.3.1/kafka-clients-4.3.1-sources.jar"


def _versions(spec: str | None) -> range:
    if not spec or spec == "none":
        return range(0)
    if spec.endswith("+"):
        return range(int(spec[:-1]), 100)
    first, _, last = spec.partition("-")
    return range(int(first), int(last or first) + 1)


def _wire(fields: list[dict[str, Any]], version: int, common: dict[str, list[dict[str, Any]]]) -> list[Any]:
    """What a definition puts on the wire at one version: names, types, nullability, nested."""
    out = []
    for field in fields:
        if version not in _versions(field["versions"]):
            continue
        struct = field["type"].removeprefix("[]")
        children = field.get("fields") or common.get(struct, [])
        out.append(
            (
                field["name"],
                field["type"] if not children else ("[]" if field["type"].startswith("[]") else ""),
                version in _versions(field.get("nullableVersions")),
                bool(field.get("tag") is not None),
                _wire(children, version, common),
            )
        )
    return out


@pytest.mark.skipif(not SOURCES_JAR.is_file(), reason="kafka-clients 4.3.1 sources jar not in ~/.m2")
@pytest.mark.parametrize(
    "ours",
    [
        protocol.HEARTBEAT_REQUEST,
        protocol.HEARTBEAT_RESPONSE,
        protocol.DESCRIBE_REQUEST,
        protocol.DESCRIBE_RESPONSE,
        protocol.FETCH_REQUEST,
        protocol.FETCH_RESPONSE,
        protocol.ACKNOWLEDGE_REQUEST,
        protocol.ACKNOWLEDGE_RESPONSE,
        protocol.OFFSETS_REQUEST,
        protocol.OFFSETS_RESPONSE,
    ],
    ids=lambda d: d["name"],
)
def test_definitions_match_the_published_ones(ours: dict[str, Any]) -> None:
    with zipfile.ZipFile(SOURCES_JAR) as jar:
        text = jar.read(f"common/message/{ours['name']}.json").decode()
    theirs = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
    common = {s["name"]: s["fields"] for s in theirs.get("commonStructs", [])}
    assert (ours["apiKey"], ours["validVersions"]) == (theirs["apiKey"], theirs["validVersions"])
    assert _versions(ours["flexibleVersions"]) == _versions(theirs["flexibleVersions"])
    for version in _versions(theirs["validVersions"]):
        assert _wire(ours["fields"], version, {}) == _wire(theirs["fields"], version, common), version
