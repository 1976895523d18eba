"""Reconciliation: a ``queued`` task whose message the workers consumed without running it goes out again.

Kafka and Redis can disagree in one way that no other path repairs: a task's message consumed (its
offset committed by the consumer group, or the record acknowledged in the share group) while its
record still says ``queued``, never claimed. Kafka will not deliver it again, and the reaper only
looks at tasks some worker holds. Such a loss was seen after workers paused past Kafka's session
timeout (docs/lab.md, "Limits"); whatever its cause, this makes it temporary.

The test is against Kafka, not a clock alone: a task qualifies once it has been ``queued`` for
``lost_after`` seconds *and* the group has consumed everything appended to every partition up to
``lost_after`` after it was queued (:meth:`Broker.consumed_through`). A task still waiting behind a
backlog therefore never qualifies, however long it waits. Its message is published again, and the
claim script makes sure it runs once even if the first copy turned up after all.
"""

from __future__ import annotations

import logging
import time

from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker

log = logging.getLogger(__name__)


def reconcile(backend: Backend, broker: Broker, lost_after: float, now: float | None = None) -> list[str]:
    """Take back the lost deliveries: the messages to publish again (their tasks stay ``queued``,
    their history saying why)."""
    now = time.time() if now is None else now
    stale = sorted(backend.stale_queued(now - lost_after), key=lambda candidate: float(candidate[1]))
    # If the group has consumed through a time, it has through every earlier one: find, by halving,
    # how many of the oldest candidates it has consumed through (usually all or none: one or two
    # questions to Kafka).
    low, high = 0, len(stale)
    while low < high:
        middle = (low + high) // 2
        if broker.consumed_through(float(stale[middle][1]) + lost_after):
            low = middle + 1
        else:
            high = middle
    messages = []
    for task_id, queued_at in stale[:low]:
        waited = now - float(queued_at)
        note = f"republished: queued {waited:.0f} s with no claim, and its message was consumed (a lost delivery)"
        message = backend.republish(task_id, queued_at, note)
        if message:
            log.warning("task %s: %s", task_id, note)
            messages.append(message)
    return messages
