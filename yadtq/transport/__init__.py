"""Kafka: where tasks travel from clients to workers.

- :mod:`~yadtq.transport.broker`: the only door to Kafka: topics, the producer, the workers' consumers;
- :mod:`~yadtq.transport.sharegroup`: a share-group (KIP-932) client for kafka-python (shared dispatch);
- :mod:`~yadtq.transport.assignor`: who gets which partition in a consumer group (partitioned dispatch);
- :mod:`~yadtq.transport.ledger`: which fetched records a worker may acknowledge or commit.
"""
