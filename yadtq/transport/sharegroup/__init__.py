"""Kafka share groups (KIP-932) for kafka-python: the message definitions and a consumer.

- :mod:`~yadtq.transport.sharegroup.protocol`: ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch and
  ShareAcknowledge as kafka-python protocol classes;
- :mod:`~yadtq.transport.sharegroup.consumer`: :class:`ShareConsumer`, one member of a share group;
- :mod:`~yadtq.transport.sharegroup.admin`: whether a broker has share groups, a group's settings, and what
  a group looks like from outside (members, records in flight, delivery counts).

Nothing here knows about tasks: this package is a Kafka client, usable on its own.
"""

from yadtq.transport.sharegroup.consumer import ShareConsumer, ShareGroupError, ShareRecord
from yadtq.transport.sharegroup.protocol import ACCEPT, REJECT, RELEASE, RENEW

__all__ = ["ACCEPT", "REJECT", "RELEASE", "RENEW", "ShareConsumer", "ShareGroupError", "ShareRecord"]
