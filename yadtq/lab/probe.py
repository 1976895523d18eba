"""The lab's unit of work, which also counts how often it really ran.

A task's record in Redis says what the queue *believes* happened (attempts, final status). To test
delivery guarantees that belief cannot be the evidence, so ``lab.work`` keeps its own count: each
time it starts executing it increments ``NS:lab:exec:<token>`` (a key of the run's namespace, so
:meth:`~yadtq.store.backend.Backend.purge` removes it) with a plain ``INCR``, outside the queue's Lua
state machine. Then it sleeps, so the service time does not depend on how busy the CPU is, and at
the end increments ``NS:lab:done:<token>``: the task's *effect*, like an e-mail sent at the end of a
real task. The two counts tell a restart (an execution cut short by a crash and run again: started
twice, done once) from a duplicate (the effect happened twice: done twice), which is the difference
between effectively-once and at-least-once delivery.

In the same round trip as the second count, the token joins the set ``NS:lab:left``: the tasks whose
work has ended. The lab runner reads its size while the run goes on, so it counts the tasks still in
the system at that moment without using any time the queue recorded (Little's law's ``L``; see
:mod:`yadtq.lab.run`). Warm-up tokens (:data:`WARM_UP`) stay out of it.

Workers load this module through ``Config.imports`` (``YADTQ_IMPORTS=yadtq.lab.probe``); the
executor process finds Redis from the ``YADTQ_*`` variables it inherits from its worker.
"""

from __future__ import annotations

import time
from functools import cache

import redis

from yadtq.core.config import Config
from yadtq.core.errors import BadArguments
from yadtq.core.ops import MAX_SLEEP, operation

OPERATION = "lab.work"
#: Tokens of the runner's warm-up tasks begin with this; they are not part of the measured load.
WARM_UP = "warm-up-"


def exec_key(namespace: str, token: str) -> str:
    """Executions started under ``token``."""
    return f"{namespace}:lab:exec:{token}"


def done_key(namespace: str, token: str) -> str:
    """Executions that ran to their end under ``token``."""
    return f"{namespace}:lab:done:{token}"


def left_key(namespace: str) -> str:
    """The set of measured tokens with an execution that ran to its end: its size is the number of
    the run's tasks that have left the system."""
    return f"{namespace}:lab:left"


@cache
def _connection() -> tuple[redis.Redis, str]:
    """One connection per executor process, made on first use (the executor is long-lived)."""
    config = Config.from_env()
    client = redis.Redis.from_url(
        config.redis_url, password=config.redis_password or None, socket_timeout=5, socket_connect_timeout=2
    )
    return client, config.namespace


def _limits(seconds: float, token: str) -> None:
    if not 0 <= seconds <= MAX_SLEEP:
        raise BadArguments(f"seconds must be between 0 and {MAX_SLEEP:g}, got {seconds!r:.40}")
    if not token or len(token) > 200:
        raise BadArguments("token must be a non-empty string of at most 200 characters")


@operation(name=OPERATION, limits=_limits)
def work(seconds: float, token: str) -> int:
    """Count this execution under ``token``, sleep ``seconds``, count it as done (and, unless it is a
    warm-up, add the token to the tasks that have left); returns the count of executions started so
    far."""
    client, namespace = _connection()
    count = int(client.incr(exec_key(namespace, token)))
    time.sleep(seconds)
    pipe = client.pipeline(transaction=False)
    pipe.incr(done_key(namespace, token))
    if not token.startswith(WARM_UP):
        pipe.sadd(left_key(namespace), token)
    pipe.execute()
    return count
