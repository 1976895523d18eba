"""The share-group messages of KIP-932, declared for kafka-python's protocol machinery.

kafka-python (3.0) builds each protocol class from a message definition in Kafka's JSON format,
read from a file of its own package, and ships none for share groups. Here the definitions are
written as Python, from the published specification (KIP-932 and Kafka's message definitions for
the 4.x brokers), for the versions this client speaks only: ShareGroupHeartbeat v1,
ShareGroupDescribe v1, ShareFetch v1-2 and ShareAcknowledge v1-2 (v2 adds the record-limit acquire
mode and RENEW acknowledgements), and the admin call DescribeShareGroupOffsets v0-1. Every one of
them is a "flexible" message (compact strings and arrays, tagged fields), which kafka-python's
codecs handle once the definition says so.

The one piece of kafka-python that is bypassed is where a definition comes from: :class:`_Defined`
hands the dictionary to the same ``StructField`` that kafka-python's own metaclass would have
built from a file.
"""

from __future__ import annotations

from typing import Any

from kafka.protocol.api_message import ApiMessage, ApiMessageData
from kafka.protocol.data_container import SlotsBuilder
from kafka.protocol.schemas import StructField

#: Acknowledgement types (the ``AcknowledgeTypes`` array of a batch): what becomes of a record.
GAP, ACCEPT, RELEASE, REJECT, RENEW = 0, 1, 2, 3, 4
#: ShareFetch v2's acquire modes: the broker may round a fetch up to whole batches, or must stop at
#: ``MaxRecords``. A worker asks for as many records as it has free slots, so it uses the second.
BATCH_OPTIMIZED, RECORD_LIMIT = 0, 1
#: Member epochs of ShareGroupHeartbeat: 0 joins, -1 leaves.
JOIN_EPOCH, LEAVE_EPOCH = 0, -1
#: Share session epochs of ShareFetch/ShareAcknowledge: 0 opens a session, -1 closes it.
OPEN_SESSION, CLOSE_SESSION = 0, -1


def _field(name: str, type_: str, versions: str = "0+", *, nullable: bool = False, **extra: Any) -> dict[str, Any]:
    """One field in Kafka's definition format; ``fields`` (nested structs) and ``default`` go in extra."""
    out: dict[str, Any] = {"name": name, "type": type_, "versions": versions}
    if nullable:
        out["nullableVersions"] = versions
        out.setdefault("default", "null")
    out.update(extra)
    return out


def _message(api_key: int, name: str, kind: str, valid: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiKey": api_key,
        "type": kind,
        "name": name,
        "validVersions": valid,
        "flexibleVersions": "0+",
        "fields": fields,
    }


def _error_fields() -> list[dict[str, Any]]:
    return [
        _field("ThrottleTimeMs", "int32"),
        _field("ErrorCode", "int16"),
        _field("ErrorMessage", "string", nullable=True),
    ]


def _leader() -> dict[str, Any]:
    return _field(
        "CurrentLeader", "LeaderIdAndEpoch", fields=[_field("LeaderId", "int32"), _field("LeaderEpoch", "int32")]
    )


def _node_endpoints() -> dict[str, Any]:
    return _field(
        "NodeEndpoints",
        "[]NodeEndpoint",
        fields=[
            _field("NodeId", "int32", mapKey=True),
            _field("Host", "string"),
            _field("Port", "int32"),
            _field("Rack", "string", nullable=True),
        ],
    )


def _ack_batches() -> dict[str, Any]:
    return _field(
        "AcknowledgementBatches",
        "[]AcknowledgementBatch",
        fields=[_field("FirstOffset", "int64"), _field("LastOffset", "int64"), _field("AcknowledgeTypes", "[]int8")],
    )


def _assignment(name: str, nullable: bool, with_names: bool) -> dict[str, Any]:
    topic = [_field("TopicId", "uuid")]
    if with_names:
        topic.append(_field("TopicName", "string"))
    topic.append(_field("Partitions", "[]int32"))
    return _field(
        name, "Assignment", nullable=nullable, fields=[_field("TopicPartitions", "[]TopicPartitions", fields=topic)]
    )


HEARTBEAT_REQUEST = _message(
    76,
    "ShareGroupHeartbeatRequest",
    "request",
    "1",
    [
        _field("GroupId", "string"),
        _field("MemberId", "string"),
        _field("MemberEpoch", "int32"),
        _field("RackId", "string", nullable=True),
        _field("SubscribedTopicNames", "[]string", nullable=True),
    ],
)
HEARTBEAT_RESPONSE = _message(
    76,
    "ShareGroupHeartbeatResponse",
    "response",
    "1",
    [
        *_error_fields(),
        _field("MemberId", "string", nullable=True),
        _field("MemberEpoch", "int32"),
        _field("HeartbeatIntervalMs", "int32"),
        _assignment("Assignment", nullable=True, with_names=False),
    ],
)
DESCRIBE_REQUEST = _message(
    77,
    "ShareGroupDescribeRequest",
    "request",
    "1",
    [_field("GroupIds", "[]string"), _field("IncludeAuthorizedOperations", "bool")],
)
DESCRIBE_RESPONSE = _message(
    77,
    "ShareGroupDescribeResponse",
    "response",
    "1",
    [
        _field("ThrottleTimeMs", "int32"),
        _field(
            "Groups",
            "[]DescribedGroup",
            fields=[
                _field("ErrorCode", "int16"),
                _field("ErrorMessage", "string", nullable=True),
                _field("GroupId", "string"),
                _field("GroupState", "string"),
                _field("GroupEpoch", "int32"),
                _field("AssignmentEpoch", "int32"),
                _field("AssignorName", "string"),
                _field(
                    "Members",
                    "[]Member",
                    fields=[
                        _field("MemberId", "string"),
                        _field("RackId", "string", nullable=True),
                        _field("MemberEpoch", "int32"),
                        _field("ClientId", "string"),
                        _field("ClientHost", "string"),
                        _field("SubscribedTopicNames", "[]string"),
                        _assignment("Assignment", nullable=False, with_names=True),
                    ],
                ),
                _field("AuthorizedOperations", "int32", default="-2147483648"),
            ],
        ),
    ],
)
FETCH_REQUEST = _message(
    78,
    "ShareFetchRequest",
    "request",
    "1-2",
    [
        _field("GroupId", "string", nullable=True),
        _field("MemberId", "string", nullable=True),
        _field("ShareSessionEpoch", "int32"),
        _field("MaxWaitMs", "int32"),
        _field("MinBytes", "int32"),
        _field("MaxBytes", "int32", default="0x7fffffff"),
        _field("MaxRecords", "int32", "1+"),
        _field("BatchSize", "int32", "1+"),
        _field("ShareAcquireMode", "int8", "2+", default="0", ignorable=True),
        _field("IsRenewAck", "bool", "2+", default="false"),
        _field(
            "Topics",
            "[]FetchTopic",
            fields=[
                _field("TopicId", "uuid", mapKey=True),
                _field("Partitions", "[]FetchPartition", fields=[_field("PartitionIndex", "int32"), _ack_batches()]),
            ],
        ),
        _field(
            "ForgottenTopicsData",
            "[]ForgottenTopic",
            fields=[_field("TopicId", "uuid"), _field("Partitions", "[]int32")],
        ),
    ],
)
FETCH_RESPONSE = _message(
    78,
    "ShareFetchResponse",
    "response",
    "1-2",
    [
        *_error_fields(),
        _field("AcquisitionLockTimeoutMs", "int32", "1+"),
        _field(
            "Responses",
            "[]ShareFetchableTopicResponse",
            fields=[
                _field("TopicId", "uuid", mapKey=True),
                _field(
                    "Partitions",
                    "[]PartitionData",
                    fields=[
                        _field("PartitionIndex", "int32"),
                        _field("ErrorCode", "int16"),
                        _field("ErrorMessage", "string", nullable=True),
                        _field("AcknowledgeErrorCode", "int16"),
                        _field("AcknowledgeErrorMessage", "string", nullable=True),
                        _leader(),
                        _field("Records", "records"),
                        _field(
                            "AcquiredRecords",
                            "[]AcquiredRecords",
                            fields=[
                                _field("FirstOffset", "int64"),
                                _field("LastOffset", "int64"),
                                _field("DeliveryCount", "int16"),
                            ],
                        ),
                    ],
                ),
            ],
        ),
        _node_endpoints(),
    ],
)
ACKNOWLEDGE_REQUEST = _message(
    79,
    "ShareAcknowledgeRequest",
    "request",
    "1-2",
    [
        _field("GroupId", "string", nullable=True),
        _field("MemberId", "string", nullable=True),
        _field("ShareSessionEpoch", "int32"),
        _field("IsRenewAck", "bool", "2+", default="false"),
        _field(
            "Topics",
            "[]AcknowledgeTopic",
            fields=[
                _field("TopicId", "uuid", mapKey=True),
                _field(
                    "Partitions", "[]AcknowledgePartition", fields=[_field("PartitionIndex", "int32"), _ack_batches()]
                ),
            ],
        ),
    ],
)
ACKNOWLEDGE_RESPONSE = _message(
    79,
    "ShareAcknowledgeResponse",
    "response",
    "1-2",
    [
        *_error_fields(),
        _field("AcquisitionLockTimeoutMs", "int32", "2+", ignorable=True),
        _field(
            "Responses",
            "[]ShareAcknowledgeTopicResponse",
            fields=[
                _field("TopicId", "uuid", mapKey=True),
                _field(
                    "Partitions",
                    "[]PartitionData",
                    fields=[
                        _field("PartitionIndex", "int32"),
                        _field("ErrorCode", "int16"),
                        _field("ErrorMessage", "string", nullable=True),
                        _leader(),
                    ],
                ),
            ],
        ),
        _node_endpoints(),
    ],
)


OFFSETS_REQUEST = _message(
    90,
    "DescribeShareGroupOffsetsRequest",
    "request",
    "0-1",
    [
        _field(
            "Groups",
            "[]DescribeShareGroupOffsetsRequestGroup",
            fields=[
                _field("GroupId", "string"),
                _field(
                    "Topics",
                    "[]DescribeShareGroupOffsetsRequestTopic",
                    nullable=True,
                    fields=[_field("TopicName", "string"), _field("Partitions", "[]int32")],
                ),
            ],
        )
    ],
)
OFFSETS_RESPONSE = _message(
    90,
    "DescribeShareGroupOffsetsResponse",
    "response",
    "0-1",
    [
        _field("ThrottleTimeMs", "int32"),
        _field(
            "Groups",
            "[]DescribeShareGroupOffsetsResponseGroup",
            fields=[
                _field("GroupId", "string"),
                _field(
                    "Topics",
                    "[]DescribeShareGroupOffsetsResponseTopic",
                    fields=[
                        _field("TopicName", "string"),
                        _field("TopicId", "uuid"),
                        _field(
                            "Partitions",
                            "[]DescribeShareGroupOffsetsResponsePartition",
                            fields=[
                                _field("PartitionIndex", "int32"),
                                _field("StartOffset", "int64"),
                                _field("LeaderEpoch", "int32"),
                                _field("Lag", "int64", "1+", ignorable=True, default="-1"),
                                _field("ErrorCode", "int16"),
                                _field("ErrorMessage", "string", nullable=True),
                            ],
                        ),
                    ],
                ),
                _field("ErrorCode", "int16"),
                _field("ErrorMessage", "string", nullable=True),
            ],
        ),
    ],
)


class _Defined(ApiMessageData):
    """kafka-python's message metaclass, fed a definition from the class body (``_definition``)
    instead of a JSON file of its own package."""

    def __new__(metacls, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kw: Any) -> Any:
        if not kw.get("init", True):  # a versioned view (``Message[2]``): nothing to load
            return super().__new__(metacls, name, bases, attrs, **kw)
        definition = attrs.pop("_definition")
        attrs["_json"] = definition
        attrs["_struct"] = StructField(definition)
        attrs["__license__"] = None
        return SlotsBuilder.__new__(metacls, name, bases, attrs, **kw)


class ShareGroupHeartbeatRequest(ApiMessage, metaclass=_Defined):
    _definition = HEARTBEAT_REQUEST


class ShareGroupHeartbeatResponse(ApiMessage, metaclass=_Defined):
    _definition = HEARTBEAT_RESPONSE


class ShareGroupDescribeRequest(ApiMessage, metaclass=_Defined):
    _definition = DESCRIBE_REQUEST


class ShareGroupDescribeResponse(ApiMessage, metaclass=_Defined):
    _definition = DESCRIBE_RESPONSE


class ShareFetchRequest(ApiMessage, metaclass=_Defined):
    _definition = FETCH_REQUEST


class ShareFetchResponse(ApiMessage, metaclass=_Defined):
    _definition = FETCH_RESPONSE


class ShareAcknowledgeRequest(ApiMessage, metaclass=_Defined):
    _definition = ACKNOWLEDGE_REQUEST


class ShareAcknowledgeResponse(ApiMessage, metaclass=_Defined):
    _definition = ACKNOWLEDGE_RESPONSE


class DescribeShareGroupOffsetsRequest(ApiMessage, metaclass=_Defined):
    _definition = OFFSETS_REQUEST


class DescribeShareGroupOffsetsResponse(ApiMessage, metaclass=_Defined):
    _definition = OFFSETS_RESPONSE
