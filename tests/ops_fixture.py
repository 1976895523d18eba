"""Operations used only by the tests; workers import this module through ``Config.imports``."""

from __future__ import annotations

import os
import time

from yadtq import OperationError, operation


@operation
def crash(code: int) -> None:
    """Exit the executor process abruptly, as a segfault or the OOM killer would."""
    os._exit(code)


@operation
def hang(seconds: float) -> float:
    """Sleep without the built-in limit (for time-limit tests)."""
    time.sleep(seconds)
    return seconds


@operation
def fail_with(message: str) -> None:
    """Fail on purpose with a message of the caller's choice."""
    raise OperationError(message)


@operation
def square_after(value: int, seconds: float) -> int:
    """value squared, after a pause: lets a test kill a worker mid-task and check the result."""
    time.sleep(seconds)
    return value * value


@operation
def kill_worker(token: str) -> None:
    """A poison task: count this execution (outside the state machine, as ``lab.work`` does), then
    SIGKILL the worker running it (the executor's parent) and exit, every time it is tried."""
    import signal

    from yadtq.lab.probe import _connection, exec_key

    client, namespace = _connection()
    client.incr(exec_key(namespace, token))
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(1)


#: How long ``counted`` keeps trying to record its execution through a Redis outage.
COUNT_DEADLINE = 120.0


def executions_key(namespace: str, token: str) -> str:
    return f"{namespace}:test:exec:{token}"


@operation
def counted(seconds: float, token: str) -> int:
    """Record this execution under ``token`` outside the state machine, then sleep ``seconds``.

    For tests that crash Redis itself: ``lab.work``'s ``INCR`` fails (and so fails the task) when
    Redis is down, and retrying an ``INCR`` whose reply was lost would count one execution twice.
    Here each execution adds its own random id to a set, retried until Redis answers: the retry is
    idempotent, so ``SCARD`` is exactly the number of executions. Returns the count so far.
    """
    import uuid

    import redis

    from yadtq.lab.probe import _connection

    client, namespace = _connection()
    key, me = executions_key(namespace, token), uuid.uuid4().hex
    deadline = time.monotonic() + COUNT_DEADLINE
    while True:
        try:
            client.sadd(key, me)
            count = int(client.scard(key))
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    time.sleep(seconds)
    return count
