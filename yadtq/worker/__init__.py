"""The worker: one process that fetches tasks from Kafka, runs them and stores their outcomes in Redis.

- :mod:`~yadtq.worker.worker`: :class:`Worker`, its consumer loop, heartbeats and shutdown;
- :mod:`~yadtq.worker.runner`: claim, execute and store, on a thread of its own;
- :mod:`~yadtq.worker.executor`: the child processes the tasks run in;
- :mod:`~yadtq.worker.events`: the hooks a worker calls at each step, and the live event stream;
- :mod:`~yadtq.worker.sink`, :mod:`~yadtq.worker.history`, :mod:`~yadtq.worker.logs`,
  :mod:`~yadtq.worker.observe`: the records a worker keeps for monitoring (the Kafka event log and
  the per-task logs), written from a background thread, and how they are read back.

Nothing is imported here, so that the executor's child process (``python -m yadtq.worker.executor``)
loads neither Kafka's nor Redis's client.
"""
