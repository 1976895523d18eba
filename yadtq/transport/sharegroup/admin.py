"""A share group seen from outside: does the broker have them, a group's settings, its members.

kafka-python's admin client has no share-group calls; these use its connection (so SASL and TLS
settings apply) and the protocol classes of :mod:`yadtq.transport.sharegroup.protocol`.
"""

from __future__ import annotations

from typing import Any

import kafka.errors as Errors
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from yadtq.transport.sharegroup.protocol import (
    DescribeShareGroupOffsetsRequest,
    ShareFetchRequest,
    ShareGroupDescribeRequest,
    ShareGroupHeartbeatRequest,
)


def has_share_groups(admin: KafkaAdminClient) -> bool:
    """Whether the broker offers share groups: ApiVersions lists ShareGroupHeartbeat and ShareFetch
    only when they are on (Kafka 4.2 and later, or ``share.version`` enabled on 4.0-4.1)."""
    versions = admin._manager.broker_version_data.api_versions or {}
    return all(request.API_KEY in versions for request in (ShareGroupHeartbeatRequest, ShareFetchRequest))


def configure(admin: KafkaAdminClient, group_id: str, settings: dict[str, str]) -> dict[str, Any]:
    """Set group-level configs (``share.*``) of one group; returns the broker's answer per group.
    A value outside the broker's bounds is refused with ``InvalidConfigurationException``."""
    resource = ConfigResource(ConfigResourceType.GROUP, group_id, dict(settings))
    result = admin.alter_configs([resource], raise_on_unknown=False, incremental=True)
    return dict(result.get("group", {}))


def describe(admin: KafkaAdminClient, group_id: str) -> dict[str, Any]:
    """The group's state and its members (client id, member id, partitions), from its coordinator.
    An unknown group answers ``{"state": "Dead", "members": []}``."""

    async def ask() -> Any:
        node = await admin._find_coordinator_id(group_id)
        request = ShareGroupDescribeRequest(group_ids=[group_id], include_authorized_operations=False)
        return await admin._manager.send(request, node_id=node)

    response = admin._manager.run(ask)
    group = response.groups[0]
    error = Errors.for_code(group.error_code)
    if error is Errors.GroupIdNotFoundError:
        return {"state": "Dead", "members": []}
    if error is not Errors.NoError:
        raise error(group.error_message or f"describing share group {group_id}")
    members = [
        {
            "client_id": m.client_id,
            "member_id": m.member_id,
            "host": m.client_host,
            "partitions": sorted(p for tp in m.assignment.topic_partitions for p in tp.partitions),
        }
        for m in group.members
    ]
    return {"state": group.group_state, "epoch": group.group_epoch, "members": members}


def start_offsets(admin: KafkaAdminClient, group_id: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: the group's start offset (every record below it is acknowledged,
    or was given up) and its lag (records from there on not yet acknowledged; -1 where the broker
    does not say). Partitions the group has not read yet are absent."""

    async def ask() -> Any:
        node = await admin._find_coordinator_id(group_id)
        group = DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestGroup
        request = DescribeShareGroupOffsetsRequest(groups=[group(group_id=group_id, topics=None)])
        return await admin._manager.send(request, node_id=node)

    response = admin._manager.run(ask)
    out: dict[int, tuple[int, int]] = {}
    for group in response.groups:
        if group.error_code and Errors.for_code(group.error_code) is not Errors.GroupIdNotFoundError:
            raise Errors.for_code(group.error_code)(group.error_message or f"offsets of share group {group_id}")
        for described in group.topics:
            if described.topic_name != topic:
                continue
            for part in described.partitions:
                if not part.error_code and part.start_offset >= 0:
                    out[part.partition_index] = (part.start_offset, part.lag)
    return out
