"""What every other part shares: the settings, the errors, the task on the wire, the operations.

- :mod:`~yadtq.core.config`: :class:`Config`, every setting and its default;
- :mod:`~yadtq.core.errors`: the exception tree;
- :mod:`~yadtq.core.task`: :class:`TaskMessage` (the JSON message on the task topic) and :class:`TaskStatus`;
- :mod:`~yadtq.core.ops`: the operation registry, ``@operation`` and the built-in operations.

Nothing here talks to Kafka or Redis, and nothing here imports another part of yadtq.
"""
