"""What a load experiment is: one JSON-able description shared by theory, simulation and real runs.

An :class:`Experiment` says how tasks arrive, how long each one takes, how many workers and
partitions serve them, and which faults to inject. Everything that varies is drawn from ``seed``, so
the theory, the simulation and the real run of one spec all see the *same* tasks at the same times,
and a sweep that changes only the arrival rate keeps the service times (common random numbers: the
difference between two runs is the change, not the luck of the draw).

Refusals are :class:`SpecError`, a :class:`~yadtq.core.errors.ConfigError`, so the CLI reports them in
one line with exit code 2.

**Overload rule.** A queue whose busiest worker is loaded at ρ ≥ 1 never settles, and a real run
of it only ends because arrivals stop. Such a spec is accepted only while the backlog left when
arrivals stop can be worked off within :data:`MAX_DRAIN` seconds (estimated as the busiest worker's
share of the work minus the arrival period); otherwise a class would wait for a run that takes
"forever". Short deliberate overloads (to watch a queue grow) stay possible.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from yadtq.core.errors import ConfigError

ARRIVALS = ("poisson", "constant", "bursts")
SERVICES = ("constant", "exponential", "list", "sequence")
DELIVERIES = ("effectively_once", "at_least_once", "at_most_once")
ACTIONS = ("kill", "term", "pause", "resume", "pause_for", "start")
#: How tasks reach workers:
#:
#: - ``shared`` (the default, as for yadtq's workers): ``workers`` processes in one Kafka share
#:   group, so any process with a free slot takes the next task of one shared queue: M/M/c;
#: - ``partitioned``: ``workers`` processes in one consumer group, each serving only the tasks of
#:   its own partitions: an M/G/1 queue per process (with one slot);
#: - ``pooled``: **one** process with ``workers`` times the slots, owning every partition, so
#:   every slot takes the next task of its one in-memory queue: M/M/c again, in one process.
DISPATCHES = ("shared", "partitioned", "pooled")
#: Longest time (s) an overloaded run may need, after its last arrival, to work off its backlog.
MAX_DRAIN = 120.0
#: Longest single service time: the limit of the ``sleep``-like lab operation.
MAX_SERVICE = 3600.0


class SpecError(ConfigError):
    """An experiment description that cannot be run; the message is one sentence saying why."""


@dataclass(frozen=True)
class Fault:
    """At ``at`` seconds after the first arrival, do ``action`` to worker number ``worker`` (0-based).

    ``kill`` is SIGKILL (a crash), ``term`` SIGTERM (a graceful stop), ``pause``/``resume`` SIGSTOP and
    SIGCONT, ``pause_for`` both ``seconds`` apart; ``start`` starts one more worker (a replacement),
    which gets the next number, so later faults can name it.
    """

    at: float
    action: str
    worker: int = 0
    #: Only for ``pause_for``: how long the worker stays stopped before SIGCONT.
    seconds: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """The tasks of one experiment: arrival times (s, from 0, non-decreasing) and service times (s)."""

    arrivals: np.ndarray
    services: np.ndarray

    def __len__(self) -> int:
        return len(self.arrivals)


@dataclass(frozen=True)
class Experiment:
    name: str = "experiment"
    #: How tasks arrive: ``poisson`` (exponential gaps), ``constant`` (even gaps) or ``bursts`` of
    #: ``burst_size`` tasks at once, spaced so that the mean rate is still ``arrival_rate``.
    arrival: str = "poisson"
    arrival_rate: float = 10.0
    burst_size: int = 10
    #: How long a task runs: ``constant`` or ``exponential`` with mean ``service_seconds``, or
    #: ``list``: drawn uniformly (with replacement) from ``service_times``, or ``sequence``: task i
    #: takes ``service_times[i mod len]`` (a scripted scenario, e.g. one long task then short ones).
    #: Tasks sleep, so the figures do not depend on how busy the CPU is.
    service: str = "exponential"
    service_seconds: float = 0.1
    service_times: tuple[float, ...] = ()
    workers: int = 2
    partitions: int = 8
    #: Slots (tasks at once) per worker process; ``pooled`` runs one process with ``workers`` times
    #: as many.
    concurrency: int = 1
    #: ``shared``, ``partitioned`` or ``pooled`` (see :data:`DISPATCHES`).
    dispatch: str = "shared"
    #: Exactly one of ``tasks`` (a count) and ``duration`` (seconds of arrivals) is set.
    tasks: int | None = 200
    duration: float | None = None
    delivery: str = "effectively_once"
    faults: tuple[Fault, ...] = ()
    seed: int = 0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 2.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_times", _numbers("service_times", list(self.service_times)))
        faults = tuple(f if isinstance(f, Fault) else _fault(f) for f in self.faults)
        object.__setattr__(self, "faults", faults)
        self.validate()

    # --- derived figures ----------------------------------------------------------------------
    @property
    def service_mean(self) -> float:
        return float(np.mean(self.service_times)) if self.service_times else self.service_seconds

    @property
    def processes(self) -> int:
        """Worker processes started at the beginning (``start`` faults add more later): ``workers``
        for shared and partitioned dispatch, one for pooled."""
        return 1 if self.dispatch == "pooled" else self.workers

    @property
    def slots(self) -> int:
        """Slots per worker process (its ``concurrency`` setting): ``concurrency``, or for pooled
        dispatch ``workers × concurrency`` in its one process."""
        return self.concurrency * (self.workers if self.dispatch == "pooled" else 1)

    @property
    def servers(self) -> int:
        """Tasks that can run at once in the whole run: ``c`` of the queueing formulas."""
        return self.workers * self.concurrency

    @property
    def service_rate(self) -> float:
        return 1.0 / self.service_mean

    @property
    def service_scv(self) -> float:
        """Squared coefficient of variation of the service time: 0 constant, 1 exponential."""
        if self.service == "constant":
            return 0.0
        if self.service == "exponential":
            return 1.0
        return float(np.var(self.service_times) / self.service_mean**2)

    def partition_counts(self) -> list[int]:
        """Partitions each worker process owns once the group settles, as Kafka's range assignor deals
        them (the first ``P mod c`` get one more); processes beyond the partition count get none.

        It matters for partitioned dispatch only (pooled: one process owns them all). With shared
        dispatch no process owns a partition: the share group hands every process records of any
        partition, so every process serves every task (see :attr:`busiest_share`)."""
        base, extra = divmod(self.partitions, self.processes)
        return [base + (1 if i < extra else 0) for i in range(self.processes)]

    @property
    def expected_tasks(self) -> float:
        return float(self.tasks) if self.tasks is not None else self.arrival_rate * float(self.duration or 0)

    @property
    def busiest_share(self) -> float:
        """The fraction of all tasks the busiest worker process serves. Partitioned: tasks go to
        partitions at random, and each process serves only its own (its partitions over all);
        pooled: the one process serves everything; shared: one queue for every process, so each
        serves ``1 / processes`` of the tasks on average."""
        if self.dispatch == "shared":
            return 1.0 / self.processes
        return max(self.partition_counts()) / self.partitions

    @property
    def busiest_load(self) -> float:
        """ρ of the busiest worker process: its share of the tasks over its slots. For shared and
        pooled dispatch every slot serves the one queue, so it is ``arrival_rate × service_mean /
        servers``, the utilisation of the M/M/c model."""
        return self.arrival_rate * self.busiest_share * self.service_mean / self.slots

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise SpecError(f"name must be 1-64 letters, digits, '-', '_' or '.', not {self.name!r}.")
        _one_of("arrival", self.arrival, ARRIVALS)
        _one_of("service", self.service, SERVICES)
        _one_of("delivery", self.delivery, DELIVERIES)
        _one_of("dispatch", self.dispatch, DISPATCHES)
        _whole("concurrency", self.concurrency, 1)
        _positive("arrival_rate", self.arrival_rate)
        _whole("workers", self.workers, 1)
        _whole("partitions", self.partitions, 1)
        _whole("burst_size", self.burst_size, 1)
        _whole("seed", self.seed, 0)
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("heartbeat_timeout", self.heartbeat_timeout)
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise SpecError("heartbeat_timeout must be longer than heartbeat_interval.")
        if (self.tasks is None) == (self.duration is None):
            raise SpecError("give exactly one of tasks (a count) and duration (seconds of arrivals).")
        if self.tasks is not None:
            _whole("tasks", self.tasks, 1)
        if self.duration is not None:
            _positive("duration", self.duration)
        if self.service in ("list", "sequence"):
            if not self.service_times:
                raise SpecError(f"service {self.service!r} needs a non-empty service_times list.")
            if any(not (0 < s <= MAX_SERVICE) for s in self.service_times):
                raise SpecError(f"every service time must be in (0, {MAX_SERVICE:g}] seconds.")
        else:
            if self.service_times:
                raise SpecError("service_times is only used with service 'list' or 'sequence'.")
            _positive("service_seconds", self.service_seconds)
            if self.service_seconds > MAX_SERVICE:
                raise SpecError(f"service_seconds must be at most {MAX_SERVICE:g}.")
        started = sum(f.action == "start" for f in self.faults)
        for fault in self.faults:
            _check_fault(fault, self.processes + started)
        self._check_drain()

    def _check_drain(self) -> None:
        rho = self.busiest_load
        if rho < 1:
            return
        work = self.expected_tasks * self.busiest_share * self.service_mean / self.slots
        drain = work - self.expected_tasks / self.arrival_rate
        if drain > MAX_DRAIN:
            raise SpecError(
                f"the busiest worker would be loaded at {rho:.2f} (>= 1), leaving a backlog that takes about "
                f"{drain:.0f} s to drain (the limit is {MAX_DRAIN:g} s); lower arrival_rate or tasks, or add workers."
            )

    # --- the tasks --------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        """Arrival and service times; the same seed always gives the same schedule. Arrivals and
        service times come from separate random streams, so changing one keeps the other."""
        arrivals_rng, services_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(2))
        arrivals = self._arrivals(arrivals_rng)
        n = len(arrivals)
        if self.service == "constant":
            services = np.full(n, self.service_seconds)
        elif self.service == "exponential":
            services = services_rng.exponential(self.service_seconds, n)
        elif self.service == "sequence":
            services = np.resize(np.asarray(self.service_times), n)
        else:
            services = services_rng.choice(np.asarray(self.service_times), n)
        return Schedule(arrivals, services)

    def _arrivals(self, rng: np.random.Generator) -> np.ndarray:
        rate = self.arrival_rate
        if self.tasks is not None:
            n = self.tasks
            if self.arrival == "poisson":
                return np.cumsum(rng.exponential(1 / rate, n))
            if self.arrival == "constant":
                return np.arange(n) / rate
            return (np.arange(n) // self.burst_size) * (self.burst_size / rate)
        duration = float(self.duration or 0)
        if self.arrival == "poisson":
            expected = rate * duration
            draws = int(expected + 10 * math.sqrt(expected) + 10)
            times = np.cumsum(rng.exponential(1 / rate, draws))
            return times[times < duration]
        if self.arrival == "constant":
            return np.arange(0.0, duration, 1 / rate)
        starts = np.arange(0.0, duration, self.burst_size / rate)
        return np.repeat(starts, self.burst_size)

    def replace(self, **changes: Any) -> Experiment:
        """A copy with some fields changed (and checked), e.g. one point of a sweep."""
        data = self.to_dict()
        data.update(changes)
        return Experiment.from_dict(data)

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["service_times"] = list(self.service_times)
        data["faults"] = [asdict(f) for f in self.faults]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> Experiment:
        if not isinstance(data, dict):
            raise SpecError("an experiment must be a JSON object of settings.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown experiment field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        values = dict(data)
        if "service_times" in values:
            values["service_times"] = _numbers("service_times", values["service_times"])
        if "faults" in values:
            if not isinstance(values["faults"], list):
                raise SpecError("faults must be a list of {at, action, worker, seconds} objects.")
            values["faults"] = tuple(_fault(f) for f in values["faults"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"the experiment is not valid JSON ({exc}).") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SpecError(f"cannot read the experiment file {str(path)!r} ({exc.strerror}).") from None
        return cls.from_json(text)


# --- checks -------------------------------------------------------------------------------------------
def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name} must be one of {', '.join(allowed)}, not {value!r}.")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: object) -> None:
    if not _number(value) or value <= 0:  # type: ignore[operator]
        raise SpecError(f"{name} must be a positive number, not {value!r}.")


def _whole(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SpecError(f"{name} must be a whole number >= {low}, not {value!r}.")


def _numbers(name: str, value: object) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(_number(v) for v in value):
        raise SpecError(f"{name} must be a list of numbers (seconds).")
    return tuple(float(v) for v in value)


def _fault(data: object) -> Fault:
    if not isinstance(data, dict):
        raise SpecError("each fault must be an object like {at, action, worker, seconds}.")
    unknown = sorted(set(data) - {"at", "action", "worker", "seconds"})
    if unknown:
        raise SpecError(f"unknown fault field(s): {', '.join(unknown)}; known: action, at, seconds, worker.")
    if "at" not in data or "action" not in data:
        raise SpecError("each fault needs at least 'at' (seconds) and 'action'.")
    return Fault(**data)


def _check_fault(fault: Fault, workers: int) -> None:
    _one_of("fault action", fault.action, ACTIONS)
    if not _number(fault.at) or fault.at < 0:
        raise SpecError(f"fault 'at' must be a number of seconds >= 0, not {fault.at!r}.")
    if not isinstance(fault.worker, int) or isinstance(fault.worker, bool) or not 0 <= fault.worker < workers:
        raise SpecError(f"fault worker must be an index from 0 to {workers - 1}, not {fault.worker!r}.")
    if fault.action == "pause_for":
        _positive("fault seconds (for pause_for)", fault.seconds)
    elif fault.seconds:
        raise SpecError(f"fault seconds is only used with pause_for, not {fault.action}.")
    if fault.action == "start" and fault.worker:
        raise SpecError("a start fault starts a new worker; it takes no worker index.")
