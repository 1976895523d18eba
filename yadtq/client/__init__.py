"""The client: submit tasks, follow them, and read the task and worker tables.

- :mod:`~yadtq.client.client`: :class:`Client` and :class:`TaskHandle`;
- :mod:`~yadtq.client.outbox`: the task records a fast ``submit`` writes to Redis in batches.
"""
