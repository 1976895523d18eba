"""Redis: where each task's status and result, and each worker's heartbeats, are kept.

- :mod:`~yadtq.store.keys`: every Redis key, in one place (``docs/protocol.md`` mirrors it);
- :mod:`~yadtq.store.scripts`: the task state machine, as Lua scripts Redis runs atomically;
- :mod:`~yadtq.store.backend`: the only door to Redis, with a name and types for each script.
"""
