"""Processes on this machine: the local Kafka and Redis, and worker processes.

- :mod:`~yadtq.processes.services`: ``yadtq up`` and ``yadtq down`` (a ``java`` Kafka and a
  ``redis-server``, with the broker's settings in ``resources/kafka/``);
- :mod:`~yadtq.processes.pool`: :class:`Pool`, worker processes started and stopped from Python.
"""
