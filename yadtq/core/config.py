"""The one home of every setting and default.

A :class:`Config` is a frozen dataclass so it can be handed to worker processes (through the
environment, see :meth:`Config.to_env`) and compared in tests. Values are resolved in this order:

1. keyword arguments to :meth:`Config.from_env` (or to ``Client(...)`` / ``Worker(...)``),
2. ``YADTQ_*`` environment variables (the name of the field in upper case, e.g. ``YADTQ_REDIS_URL``),
3. the endpoints that ``yadtq up`` wrote to ``$YADTQ_HOME/services.json`` (so ``Client()`` finds
   services even when ``yadtq up`` had to fall back to another port),
4. the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from yadtq.core.errors import ConfigError

ENV_PREFIX = "YADTQ_"
DELIVERY_MODES = ("effectively_once", "at_least_once", "at_most_once")
DISPATCH_MODES = ("shared", "partitioned")


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yadtq"


@dataclass(frozen=True)
class Config:
    """Everything a client, worker or service launcher needs to know."""

    # --- where the services are -------------------------------------------------------------
    #: Kafka bootstrap servers, comma separated.
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: Redis URL; ``rediss://`` turns on TLS, a password goes in the URL or ``redis_password``.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    #: Kafka security settings, passed through to kafka-python unchanged when set.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""

    # --- names ------------------------------------------------------------------------------
    #: Prefix of every topic, consumer group and Redis key; tests and labs use their own so
    #: several runs can share one Kafka and one Redis without seeing each other.
    namespace: str = "yadtq"
    #: Partitions of the task topic with partitioned dispatch: the most workers that can be busy at
    #: once. Shared dispatch uses one partition, which every worker reads (``Broker.ensure_topics``).
    partitions: int = 8
    #: Extra modules to import in workers and clients so their ``@operation``s are registered.
    imports: tuple[str, ...] = ()

    # --- worker behaviour -------------------------------------------------------------------
    #: How tasks reach workers. ``shared`` (Kafka share groups, KIP-932): one queue, any worker with
    #: a free slot takes the next task, the broker locks each handed-out record and counts its
    #: deliveries. ``partitioned``: a classic consumer group, each partition one worker's own queue
    #: (for brokers older than 4.2, and for the lab's comparison). A worker on a broker without share
    #: groups says so once and falls back to ``partitioned``.
    dispatch: str = "shared"
    #: Shared dispatch: how long the broker lets a worker hold a task's record unacknowledged before
    #: handing it to another (the share group's ``share.record.lock.duration.ms``). A worker renews
    #: the lock of every task it still runs, so this bounds only how long the record of a worker
    #: that was killed or paused before it claimed the task waits. 15 s is the broker's lowest
    #: allowed value unless ``group.share.min.record.lock.duration.ms`` is lowered.
    share_lock: float = 15.0
    #: Shared dispatch: a record handed out this many times (each time to a worker that died or
    #: stalled holding it) is dead-lettered, not run again; also the group's
    #: ``share.delivery.count.limit`` (the broker allows 2 to 10), so Kafka stops there too.
    max_deliveries: int = 10
    heartbeat_interval: float = 1.0
    #: A worker whose last heartbeat is older than this is declared dead and its task requeued.
    heartbeat_timeout: float = 2.5
    #: Heartbeats kept per worker for the timeline (about ten minutes at the default interval).
    heartbeat_history: int = 600
    #: Seconds the record of a stopped or dead worker is kept (for ``yadtq workers --all`` and the
    #: timeline) before it is removed, so a lab that starts many workers does not list them forever.
    worker_retention: float = 3600.0
    #: Default per-task time limit in seconds; a task may ask for less or more (up to 24 h).
    time_limit: float = 300.0
    #: Default retries for infrastructure failures (worker died, executor crashed).
    max_retries: int = 3
    #: Exponential backoff between retries: base * 2**(attempt-1), capped.
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    #: On SIGTERM a busy worker waits this long for its task, then hands it back.
    shutdown_grace: float = 10.0
    #: Partitioned dispatch: Kafka group session timeout, how fast Kafka itself notices a dead
    #: consumer. Short, because a rebalance (e.g. a replacement worker joining) waits for every
    #: member it still believes in.
    session_timeout: float = 3.0
    #: Partitioned dispatch: Kafka's max.poll.interval (also the rebalance timeout): the worker polls while a task runs
    #: and while Redis is down, so this bounds one loop iteration, never the length of a task.
    max_poll_interval: float = 20.0
    #: Tasks one worker runs at once, each in its own executor process (``yadtq worker --concurrency``).
    concurrency: int = 1
    #: When a message is acknowledged (its offset committed) relative to running it: ``effectively_once``
    #: (claim in Redis, run, store, then acknowledge; a redelivery of a finished task is skipped),
    #: ``at_least_once`` (run, store, acknowledge; every delivery runs) or ``at_most_once``
    #: (acknowledge, then run; a crash loses the task). The lab compares them; only the default is
    #: a sound choice for real work.
    delivery: str = "effectively_once"
    #: Partitioned dispatch: messages a worker fetches ahead of its free slots, so that it never waits
    #: on Kafka between tasks (a shared worker fetches only for free slots: a task waits in the broker).
    prefetch: int = 64
    #: Partitioned dispatch: a task running this long counts as stuck: a worker whose every slot holds one hands its
    #: partitions to free workers (one rebalance) and asks for some once a slot is free again, and
    #: at a join it announces only its other slots. 0 turns this off: partitions then go evenly, and
    #: wait for long tasks, as with Kafka's stock assignors.
    shed_after: float = 2.0

    # --- reliability and security settings (docs/reliability.md) -----------------------------
    #: Whether live workers run the reaper (the ``REAP`` script) after their heartbeats: it marks
    #: silent workers dead and requeues their tasks, and requeues a task a live worker holds in
    #: Redis but has stopped listing in its heartbeats. Off, Kafka's redelivery after the session
    #: timeout is the only recovery path; the tests turn it off to prove that path alone.
    reaper: bool = True
    #: Seconds a ``queued`` task may go unclaimed before the reconciliation asks Kafka about it: once
    #: the workers' group has consumed (committed, or acknowledged in the share group) everything
    #: appended to every partition up to that many seconds after the task was queued, its message
    #: was consumed and it never ran (a lost delivery), and a worker publishes it again. Longer than
    #: ``submit_timeout``, the longest a message can be on its way to the broker. 0: off.
    lost_after: float = 60.0
    #: ``yadtq up`` starts Kafka with a SASL_PLAINTEXT listener (PLAIN, one user: the
    #: ``kafka_sasl_*`` settings, which clients and workers also use) and Redis with the default
    #: user off and one ACL user, ``redis_username`` with ``redis_password``.
    secure: bool = False
    #: The Redis ACL user of secured services; ``yadtq up`` writes it into the recorded Redis URL.
    redis_username: str = "yadtq"
    #: TLS for secured services: the server's certificate and key (PEM). Set, ``yadtq up`` makes
    #: Kafka's listener SASL_SSL and Redis TLS-only; clients then set
    #: ``kafka_security_protocol=SASL_SSL`` and ``kafka_ssl_cafile`` (the CA that signed the
    #: certificate, or the certificate itself when self-signed), which also verifies Redis.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # --- end of the reliability and security settings ---------------------------------------

    #: Log level of a worker's own lines (INFO: one line per task; WARNING for benchmarks).
    log_level: str = "INFO"
    #: Log level of the kafka-python library in `yadtq` commands (DEBUG to see the group protocol).
    kafka_log_level: str = "ERROR"

    # --- client behaviour -------------------------------------------------------------------
    #: How long submit() waits for Kafka's acknowledgement or Redis before raising.
    submit_timeout: float = 10.0
    #: Whether submit() waits for Kafka's acknowledgement before it returns (the CLI always does).
    #: Off: submits are batched and about ten times faster; ``handle.accepted()`` and
    #: ``client.flush()`` report a refused message (docs/performance.md has the trade-off).
    submit_wait: bool = False
    #: Largest accepted task message in bytes.
    max_message_bytes: int = 64 * 1024
    #: How long a finished task's record is kept in Redis (seconds); 0 keeps it forever.
    result_ttl: int = 7 * 24 * 3600

    # --- monitoring: live dashboard, event history, task logs ---------------------------------
    #: Fewest seconds between two redraws of the live dashboard (events only mark it stale).
    dashboard_interval: float = 1.0
    #: Workers publish lifecycle events to the Kafka topic ``NS.events`` too, so the history of
    #: tasks and workers survives a restart of everything, Redis included (``client.replay()``).
    event_log: bool = True
    #: Log lines kept per task across workers and retries (``yadtq logs TASK_ID``); 0 keeps none.
    task_log_lines: int = 200
    #: A worker's log lines as ``text`` or ``json`` (one JSON object per line, for log shippers).
    log_format: str = "text"
    # --- end of monitoring ---------------------------------------------------------------------

    # --- local services (``yadtq up``) ------------------------------------------------------
    home: Path = field(default_factory=_default_home)
    kafka_version: str = "4.3.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    kafka_heap: str = "512m"

    # --- derived names ----------------------------------------------------------------------
    @property
    def task_topic(self) -> str:
        return f"{self.namespace}.tasks"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def events_topic(self) -> str:
        return f"{self.namespace}.events"

    @property
    def group_id(self) -> str:
        return f"{self.namespace}.workers"

    @property
    def share_group_id(self) -> str:
        """The share group of ``dispatch = "shared"``: a group id of its own, since Kafka keeps
        consumer groups and share groups in one namespace and a group has one type."""
        return f"{self.namespace}.shared-workers"

    @property
    def services_file(self) -> Path:
        return Path(self.home) / "services.json"

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from overrides, ``YADTQ_*`` variables, ``services.json`` and defaults."""
        env = dict(os.environ if env is None else env)
        known = {f.name: f for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        home = overrides.get("home") or env.get(ENV_PREFIX + "HOME")
        if home:
            values["home"] = Path(home)
        values.update(_read_services_file(Path(values.get("home", _default_home()))))
        for name, f in known.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = _parse(name, f.type, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> Config:
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject settings that would make the queue misbehave later, with the reason now."""
        if not self.namespace or any(c in self.namespace for c in " :/\\{}"):
            raise ConfigError(f"namespace {self.namespace!r} must be non-empty, without spaces, ':' or '/'")
        if self.partitions < 1:
            raise ConfigError("partitions must be at least 1")
        if self.heartbeat_interval <= 0:
            raise ConfigError("heartbeat_interval must be positive")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigError("heartbeat_timeout must be longer than heartbeat_interval")
        if self.worker_retention <= self.heartbeat_timeout:
            # shorter would remove a live worker's record between two of its heartbeats
            raise ConfigError("worker_retention must be longer than heartbeat_timeout")
        if self.lost_after and self.lost_after <= self.submit_timeout:
            raise ConfigError("lost_after must be longer than submit_timeout (or 0: no reconciliation)")
        if self.time_limit <= 0 or self.submit_timeout <= 0:
            raise ConfigError("time_limit and submit_timeout must be positive")
        if self.max_retries < 0:
            raise ConfigError("max_retries cannot be negative")
        if self.concurrency < 1 or self.prefetch < 1:
            raise ConfigError("concurrency and prefetch must be at least 1")
        if self.delivery not in DELIVERY_MODES:
            raise ConfigError(f"delivery {self.delivery!r} must be one of {', '.join(DELIVERY_MODES)}")
        if self.dispatch not in DISPATCH_MODES:
            raise ConfigError(f"dispatch {self.dispatch!r} must be one of {', '.join(DISPATCH_MODES)}")
        if not 2 <= self.max_deliveries <= 10:
            raise ConfigError("max_deliveries must be between 2 and 10 (the bounds Kafka allows)")
        if self.share_lock < 1:
            raise ConfigError("share_lock must be at least 1 second")
        if self.shed_after < 0:
            raise ConfigError("shed_after cannot be negative (0 turns it off)")
        _validate_monitoring(self)
        for name in ("log_level", "kafka_log_level"):
            if getattr(self, name).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                raise ConfigError(f"{name} {getattr(self, name)!r} is not a logging level")

    def to_env(self) -> dict[str, str]:
        """The ``YADTQ_*`` variables that recreate this config in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out

    # --- client settings for the libraries ---------------------------------------------------
    def kafka_options(self) -> dict[str, Any]:
        """Connection options shared by every Kafka client yadtq creates."""
        opts: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap.split(",")}
        if self.kafka_security_protocol != "PLAINTEXT":
            opts["security_protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            opts["ssl_cafile"] = self.kafka_ssl_cafile
        return opts


def _validate_monitoring(config: Config) -> None:
    """The monitoring settings (kept beside their block rather than inside ``validate``)."""
    if config.dashboard_interval <= 0:
        raise ConfigError("dashboard_interval must be positive")
    if config.task_log_lines < 0:
        raise ConfigError("task_log_lines cannot be negative (0 keeps none)")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log_format {config.log_format!r} must be text or json")


def _parse(name: str, type_: Any, raw: str) -> Any:
    kind = str(type_)
    try:
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw


def _read_services_file(home: Path) -> dict[str, Any]:
    """Endpoints recorded by ``yadtq up``; absent or unreadable means 'use the defaults'."""
    try:
        data = json.loads((home / "services.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in ("kafka_bootstrap", "redis_url") if isinstance(data.get(k), str)}
