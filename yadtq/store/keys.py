"""Every Redis key yadtq uses, in one place (``docs/protocol.md`` mirrors this file).

All keys start with the namespace, so a test or a lab run can use its own and clean up with one
``SCAN MATCH ns:*``. Hashes keep readable fields (any Redis client can ``HGETALL`` a task);
JSON is used only for values that are JSON on the wire too (args, kwargs, result).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    namespace: str

    def task(self, task_id: str) -> str:
        """Hash: id, op, args, kwargs, status, attempts, worker, *_at times, result, error, reason, message."""
        return f"{self.namespace}:task:{task_id}"

    def history(self, task_id: str) -> str:
        """List of JSON status changes ``{status, at, worker, attempt, note}``, oldest first."""
        return f"{self.namespace}:task:{task_id}:history"

    def done(self, task_id: str) -> str:
        """List pushed once when the task reaches a final state, so waiters can BLPOP instead of polling."""
        return f"{self.namespace}:task:{task_id}:done"

    @property
    def tasks(self) -> str:
        """Sorted set: task id scored by submission time; the index behind ``Client.tasks()``."""
        return f"{self.namespace}:tasks"

    @property
    def reconciled(self) -> str:
        """String: the submission time before which every task is final; where the reconciliation's
        next scan of the task index begins (``worker/reconcile.py``)."""
        return f"{self.namespace}:reconciled"

    @property
    def reconciling(self) -> str:
        """String with an expiry: the worker whose turn it is to reconcile, one per ``lost_after / 2``."""
        return f"{self.namespace}:reconciling"

    @property
    def running(self) -> str:
        """Hash: task id -> worker name, for every task in ``processing``; what the reaper scans."""
        return f"{self.namespace}:running"

    @property
    def scheduled(self) -> str:
        """Sorted set: task id scored by the time of its next retry."""
        return f"{self.namespace}:scheduled"

    @property
    def workers(self) -> str:
        """Sorted set: worker name scored by its last heartbeat."""
        return f"{self.namespace}:workers"

    def worker(self, name: str) -> str:
        """Hash: name, pid, host, state, current_task, partitions, processed, failed, lost,
        lost_tasks, *_at times."""
        return f"{self.namespace}:worker:{name}"

    def beats(self, name: str) -> str:
        """List of JSON heartbeats ``{at, state, task}``, newest first, capped."""
        return f"{self.namespace}:worker:{name}:beats"

    @property
    def dead_letters(self) -> str:
        """List of JSON dead-letter records, newest first, capped."""
        return f"{self.namespace}:dead-letters"

    @property
    def events(self) -> str:
        """Pub/sub channel: every status change and heartbeat, as JSON."""
        return f"{self.namespace}:events"

    @property
    def pattern(self) -> str:
        """Glob matching every key of this namespace (for clean-up)."""
        return f"{self.namespace}:*"
