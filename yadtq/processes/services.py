"""Run a local single-node Kafka and a Redis, so ``yadtq up`` works without Docker.

Kafka's jars come from Maven Central once (through the Kafka-only ``resources/kafka/pom.xml``), the
broker runs as a plain ``java`` process in KRaft mode and Redis as a plain ``redis-server``, both on
127.0.0.1 only. What was started is recorded in ``$YADTQ_HOME/services.json`` (pids, addresses, logs):
``down`` stops exactly those processes, :meth:`Config.from_env` finds the addresses even after a port
fallback, and fault-injection tests ``stop``/``start`` one service on the same port with the same data.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal as signals
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yadtq.core.config import Config
from yadtq.core.errors import ServiceError

Say = Callable[[str], None]

SERVICES = ("kafka", "redis")
LABELS = {"kafka": "Kafka", "redis": "Redis"}
#: The services.json key holding each service's address.
ADDRESS_KEYS = {"kafka": "kafka_bootstrap", "redis": "redis_url"}
#: Topic of the readiness round trip; created with one partition because auto-creation is off.
HEALTH_TOPIC = "_yadtq_health"
KAFKA_START_TIMEOUT, REDIS_START_TIMEOUT, STOP_TIMEOUT = 90.0, 15.0, 20.0
MAVEN_TIMEOUT, FORMAT_TIMEOUT = 1200.0, 120.0
#: How far above a taken port to look for a free one.
PORT_SCAN = 100
#: Written next to the jars once Maven succeeded, so later runs skip Maven entirely.
RESOLVED_MARKER = ".resolved"

_TOOLS = {"kafka": ("java", "mvn"), "redis": ("redis-server",)}
_HINTS = {
    "java": "java not found: install a Java 17 (or newer) runtime, e.g. `apt-get install"
    " openjdk-17-jre-headless` (Debian/Ubuntu), or run `docker compose up -d` instead",
    "mvn": "mvn not found: install Maven with `apt-get install maven` (Debian/Ubuntu) so the Kafka jars"
    " can be downloaded once, or run `docker compose up -d` instead",
    "redis-server": "redis-server not found: install it with `apt-get install redis-server` (Debian/Ubuntu)"
    " or run `docker compose up -d` instead",
}
#: Children started by this process, kept so they are reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _quiet(_: str) -> None:
    pass


# --- public API ---------------------------------------------------------------------------------
def up(config: Config, say: Say = print) -> dict[str, Any]:
    """Start whatever of Kafka and Redis is not already running; return what services.json records."""
    state = _read_state(config)
    _check_secure(config)
    probes = {name: _probe(name, state, config) for name in SERVICES}
    for name in SERVICES:
        if probes[name] == "running":
            say(f"{LABELS[name]} already running at {state[ADDRESS_KEYS[name]]} (pid {state[name + '_pid']})")
    need = [name for name in SERVICES if probes[name] != "running"]
    tools = _require_tools(config, need)  # before anything starts: one clear sentence if one is missing
    if not need:
        return state
    if "kafka" in need:
        _ensure_jars(config, tools, say)
    for name in need:
        if probes[name] == "stale":
            _stop_stale(name, state, say)
        if name == "kafka":
            port = _pick_port(config.kafka_port, set(), "Kafka", say)
            cport = _pick_port(config.kafka_controller_port, {port}, "Kafka's controller", say)
        else:
            port, cport = _pick_port(config.redis_port, set(), "Redis", say), 0
        state.update(_launch(config, name, port, cport, tools, say), started_at=_now())
        _write_state(config, state)
    for name in SERVICES:
        pid, log = state[f"{name}_pid"], state[f"{name}_log"]
        say(f"{LABELS[name]}: {state[ADDRESS_KEYS[name]]} (pid {pid}, log {log})")
    return state


def down(config: Config, say: Say = print) -> None:
    """Stop what ``up`` started (only processes that still look like ours) and forget them."""
    state = _read_state(config)
    stopped = 0
    for name in SERVICES:
        pid = state.get(f"{name}_pid")
        if not pid or not _exists(pid):
            continue
        if not _is_ours(name, pid):
            say(f"pid {pid} recorded for {LABELS[name]} now belongs to another program; left it alone")
            continue
        _terminate(pid, signals.SIGTERM)
        say(f"Stopped {LABELS[name]} at {state.get(ADDRESS_KEYS[name])} (pid {pid})")
        stopped += 1
    config.services_file.unlink(missing_ok=True)
    if not stopped:
        say("Nothing is running.")


def stop(config: Config, name: str, *, signal: int = signals.SIGTERM, say: Say = _quiet) -> None:
    """Stop one service but keep its port and data, so :func:`start` can bring it back (fault tests).

    ``signal=SIGKILL`` simulates a crash: no clean shutdown, so Kafka recovers its log on the next start.
    """
    _check_name(name)
    state = _read_state(config)
    pid = state.get(f"{name}_pid")
    if _ours(name, pid):
        _terminate(pid, signal)
        say(f"Stopped {LABELS[name]} (pid {pid}) with {signals.Signals(signal).name}")
    if state:
        state[f"{name}_pid"] = None
        _write_state(config, state)


def start(config: Config, name: str, *, say: Say = _quiet) -> dict[str, Any]:
    """Start one recorded service again on the same port with the same data; wait until it answers."""
    _check_name(name)
    state = _read_state(config)
    if not state.get(ADDRESS_KEYS[name]):
        raise ServiceError(f"no {LABELS[name]} recorded in {config.services_file}; run `yadtq up` first")
    probe = _probe(name, state, config)
    if probe == "running":
        return state
    tools = _require_tools(config, [name])
    if probe == "stale":
        _stop_stale(name, state, say)
    port = _port_of(name, state[ADDRESS_KEYS[name]])
    cport = int(state.get("kafka_controller_port") or config.kafka_controller_port)
    taken = [p for p in ((port, cport) if name == "kafka" else (port,)) if not _port_free(p)]
    if taken:
        raise ServiceError(f"cannot restart {LABELS[name]}: port {taken[0]} is taken by another program")
    state.update(_launch(config, name, port, cport, tools, say))
    _write_state(config, state)
    return state


def status(config: Config) -> dict[str, dict[str, Any]]:
    """Per service: is our recorded process alive and listening, its pid, its address."""
    state = _read_state(config)
    defaults = {"kafka": f"127.0.0.1:{config.kafka_port}", "redis": f"redis://127.0.0.1:{config.redis_port}/0"}
    out: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        pid, address = state.get(f"{name}_pid"), state.get(ADDRESS_KEYS[name]) or defaults[name]
        running = _ours(name, pid) and _tcp_open("127.0.0.1", _port_of(name, address), 1.0)
        out[name] = {
            "running": running,
            "pid": pid if running else None,
            "address": address,
            "log": state.get(f"{name}_log"),
        }
    return out


def redis_ready(url: str, timeout: float, password: str | None = None) -> bool:
    """True once Redis answers PING (a Redis still loading its AOF does not count)."""
    return _retry(lambda t: _redis_attempt(url, t, password), timeout)


def kafka_ready(bootstrap: str, timeout: float, options: dict[str, Any] | None = None) -> bool:
    """True once a message produced to ``_yadtq_health`` is consumed back: the broker really works.
    ``options`` are kafka-python security settings (``Config.kafka_options``) for a secured broker."""
    return _retry(lambda t: _kafka_attempt(bootstrap, t, options), timeout)


def security_options(config: Config) -> dict[str, Any]:
    """The kafka-python settings of ``config`` other than the address: SASL, TLS."""
    return {k: v for k, v in config.kafka_options().items() if k != "bootstrap_servers"}


# --- readiness ----------------------------------------------------------------------------------
def _retry(attempt: Callable[[float], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if attempt(remaining):
            return True
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return False


def _redis_attempt(url: str, timeout: float, password: str | None = None) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    wait = max(0.05, min(timeout, 2.0))  # and no retries of its own, so the caller's timeout holds
    client = redis.Redis.from_url(
        url, password=password or None, socket_timeout=wait, socket_connect_timeout=wait, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _kafka_attempt(bootstrap: str, timeout: float, options: dict[str, Any] | None = None) -> bool:
    """One bounded produce + consume round trip; any failure just means "not ready yet"."""
    opts = dict(options or {})
    deadline = time.monotonic() + timeout
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    host, _, port = (servers or [""])[0].rpartition(":")
    if not port.isdigit() or not _tcp_open(host or "127.0.0.1", int(port), min(timeout, 1.0)):
        return False  # not listening yet: don't let kafka-python log connection errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import TopicAlreadyExistsError

    def ms() -> int:
        return max(500, int((deadline - time.monotonic()) * 1000))

    nonce = uuid.uuid4().hex.encode()
    try:
        with ExitStack() as stack:
            admin = KafkaAdminClient(
                bootstrap_servers=servers, bootstrap_timeout_ms=ms(), request_timeout_ms=ms(), **opts
            )
            stack.callback(_close_quietly, admin)
            if HEALTH_TOPIC not in admin.list_topics():
                with suppress(TopicAlreadyExistsError):
                    admin.create_topics(
                        {HEALTH_TOPIC: {"num_partitions": 1, "replication_factor": 1}},
                        timeout_ms=ms(),
                        wait_for_metadata=True,
                    )
            producer = KafkaProducer(bootstrap_servers=servers, bootstrap_timeout_ms=ms(), max_block_ms=ms(), **opts)
            stack.callback(_close_quietly, producer, timeout=1)
            sent = producer.send(HEALTH_TOPIC, value=nonce, partition=0).get(timeout=ms() / 1000)
            consumer = KafkaConsumer(
                bootstrap_servers=servers,
                group_id=None,
                enable_auto_commit=False,
                bootstrap_timeout_ms=ms(),
                request_timeout_ms=max(ms(), 1000),
                fetch_max_wait_ms=100,
                **opts,
            )
            stack.callback(_close_quietly, consumer)
            partition = TopicPartition(HEALTH_TOPIC, 0)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            while time.monotonic() < deadline:
                if any(r.value == nonce for r in consumer.poll(timeout_ms=min(500, ms())).get(partition, [])):
                    return True
            return False
    except Exception:  # kafka-python raises many kinds; all of them mean "not yet"
        return False


def _close_quietly(client: Any, **kwargs: Any) -> None:
    with suppress(Exception):
        client.close(**kwargs)


# --- launching ----------------------------------------------------------------------------------
def _launch(config: Config, name: str, port: int, cport: int, tools: dict[str, str], say: Say) -> dict[str, Any]:
    """Start one service on the given port(s), wait until it answers, return its services.json entries."""
    home = Path(config.home).absolute()
    log = home / "logs" / f"{name}.log"
    if name == "kafka":
        bootstrap = f"127.0.0.1:{port}"
        cmd = _kafka_command(config, port, cport, tools["java"])
        say(f"Starting Kafka {config.kafka_version} on {bootstrap} (controller port {cport}), log {log}")
        proc = _spawn(cmd, log, home)
        options = security_options(config)
        _wait_ready(proc, "Kafka", lambda t: _kafka_attempt(bootstrap, min(t, 30), options), KAFKA_START_TIMEOUT, log)
        return {
            "kafka_bootstrap": bootstrap,
            "kafka_controller_port": cport,
            "kafka_pid": proc.pid,
            "kafka_log": str(log),
        }
    data = home / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{port}/0"
    secure: list[str] = []
    if config.secure:
        # An ACL file (mode 600) rather than arguments, so the password is not in `ps` output.
        # The default user is off: a client without the name and password gets NOAUTH, nothing else.
        acl = _private_file(home / "redis-users.acl")
        acl.write_text(f"user default off\nuser {config.redis_username} on >{config.redis_password} ~* &* +@all\n")
        secure = ["--aclfile", str(acl)]
        url = f"redis://{config.redis_username}@127.0.0.1:{port}/0"  # the password stays out of services.json
        if config.tls_cert_file:
            # TLS only: the plain port is closed, and clients verify the server, not the reverse
            cert, key, ca = config.tls_cert_file, config.tls_key_file, config.kafka_ssl_cafile
            secure += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key]
            secure += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
            url = f"rediss://{config.redis_username}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    cmd = [
        tools["redis-server"],
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data),
        # AOF, so a restarted Redis (fault tests) still has every task record
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        *secure,
    ]
    say(f"Starting Redis on 127.0.0.1:{port}, log {log}")
    proc = _spawn(cmd, log, home)
    password = config.redis_password
    _wait_ready(proc, "Redis", lambda t: _redis_attempt(url, t, password), REDIS_START_TIMEOUT, log)
    return {"redis_url": url, "redis_pid": proc.pid, "redis_log": str(log)}


def _kafka_command(config: Config, port: int, cport: int, java: str) -> list[str]:
    """Render server.properties, format the data dir once, and return the broker's command line."""
    home = Path(config.home).absolute()
    data = home / "kafka-data"
    log_dir = data / "log"
    props, log4j = home / "server.properties", home / "log4j2.properties"
    text = _resource("server.properties").decode()
    values = {"BROKER_PORT": port, "CONTROLLER_PORT": cport, "DATA_DIR": log_dir, "NODE_ID": 1}
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    if config.secure:
        text = _secure_properties(text, config, port, cport)
    _private_file(props).write_text(text)
    log4j.write_bytes(_resource("log4j2.properties"))
    classpath = [f"-Dlog4j2.configurationFile={log4j}", "-cp", str(kafka_libs(config) / "*")]
    if not (log_dir / "meta.properties").is_file():
        cmd = [
            java,
            "-Xmx256m",
            *classpath,
            "kafka.tools.StorageTool",
            "format",
            # one argument: an id may start with '-', which would read as an option
            f"--cluster-id={_cluster_id(data)}",
            "-c",
            str(props),
            "-g",
        ]
        _run(cmd, home, home / "logs" / "kafka-format.log", FORMAT_TIMEOUT, f"formatting {log_dir}")
    heap = config.kafka_heap
    return [
        java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *classpath,
        "kafka.Kafka",
        str(props),
    ]


def _cluster_id(data: Path) -> str:
    """The id kept beside the data: re-formatting with another id would be refused."""
    path = data / "cluster-id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    data.mkdir(parents=True, exist_ok=True)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")  # Kafka's Uuid format
    path.write_text(cluster_id + "\n")
    return cluster_id


def _ensure_jars(config: Config, tools: dict[str, str], say: Say) -> None:
    """Resolve the broker's jars with Maven once per Kafka version; later runs find the marker."""
    if _jars_ready(config):
        return
    kdir = _kafka_dir(config).absolute()
    libs = kdir / "libs"
    kdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)  # a half-finished earlier run could mix versions
    (kdir / "pom.xml").write_bytes(_resource("pom.xml"))
    version = config.kafka_version
    cmd = [
        tools["mvn"],
        "-q",
        "-B",
        "-Dstyle.color=never",
        "package",
        f"-Dkafka.version={version}",
        f"-Dlibs.dir={libs}",
    ]
    say(f"Downloading the Kafka {version} jars into {libs} (once; a minute or two): {' '.join(cmd)}")
    _run(cmd, kdir, kdir / "maven.log", MAVEN_TIMEOUT, f"Maven (fetching the Kafka {version} jars)")
    jars = sorted(libs.glob("*.jar"))
    if not jars:
        raise ServiceError(f"Maven finished but left no jars in {libs}; see {kdir / 'maven.log'}")
    (kdir / RESOLVED_MARKER).write_text(f"{len(jars)} jars resolved at {_now()}\n")
    say(f"Kafka jars ready: {len(jars)} jars in {libs}")


def _jars_ready(config: Config) -> bool:
    kdir = _kafka_dir(config)
    return (kdir / RESOLVED_MARKER).is_file() and any((kdir / "libs").glob("*.jar"))


def _run(cmd: list[str], cwd: Path, log: Path, timeout: float, what: str) -> None:
    """Run a set-up step to completion, its output kept in a log that a failure quotes."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("wb") as out:
            code = subprocess.run(
                cmd,
                check=False,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what} took over {timeout:.0f} s; see {log}:\n{_tail(log)}") from None
    if code != 0:
        raise ServiceError(f"{what} failed (exit {code}); see {log}:\n{_tail(log)}")


def _spawn(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session (Ctrl-C in the shell does not reach it), output to its log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- {_now()} yadtq starts: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_ready(
    proc: subprocess.Popen[bytes], label: str, attempt: Callable[[float], bool], timeout: float, log: Path
) -> None:
    """Wait for a real answer; a process that exits or never answers is killed and reported."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if (code := proc.poll()) is not None:
            _CHILDREN.pop(proc.pid, None)
            raise ServiceError(f"{label} exited with code {code} while starting; see {log}:\n{_tail(log)}")
        if attempt(remaining):
            return
        time.sleep(0.2)
    _terminate(proc.pid, signals.SIGKILL)
    raise ServiceError(f"{label} did not answer within {timeout:.0f} s and was stopped; see {log}:\n" + _tail(log))


# --- security (YADTQ_SECURE) ---------------------------------------------------------------------
#: Characters a credential may not contain: they would break the JAAS line or the ACL file.
_BAD_CREDENTIAL = set('"\\; \t\r\n')


def _check_secure(config: Config) -> None:
    """With ``secure``, the credentials must be given (no default password) and be plain tokens."""
    if not config.secure:
        if config.tls_cert_file:
            raise ServiceError("YADTQ_TLS_CERT_FILE is for secured services: set YADTQ_SECURE=1 as well")
        return
    protocol = "SASL_SSL" if config.tls_cert_file else "SASL_PLAINTEXT"
    if config.kafka_security_protocol != protocol or config.kafka_sasl_mechanism != "PLAIN":
        raise ServiceError(
            f"secure services take SASL PLAIN: set YADTQ_KAFKA_SECURITY_PROTOCOL={protocol} and "
            "YADTQ_KAFKA_SASL_MECHANISM=PLAIN (clients and workers need the same settings)"
        )
    if config.tls_cert_file:
        files = {
            "YADTQ_TLS_CERT_FILE": config.tls_cert_file,
            "YADTQ_TLS_KEY_FILE": config.tls_key_file,
            "YADTQ_KAFKA_SSL_CAFILE": config.kafka_ssl_cafile,
        }
        for name, value in files.items():
            if not value or not Path(value).is_file() or _BAD_CREDENTIAL & set(value):
                raise ServiceError(f"secure services with TLS need {name}: a PEM file, its path without spaces")
    creds = {
        "YADTQ_KAFKA_SASL_USERNAME": config.kafka_sasl_username,
        "YADTQ_KAFKA_SASL_PASSWORD": config.kafka_sasl_password,
        "YADTQ_REDIS_USERNAME": config.redis_username,
        "YADTQ_REDIS_PASSWORD": config.redis_password,
    }
    for name, value in creds.items():
        if not value or _BAD_CREDENTIAL & set(value):
            raise ServiceError(f"secure services need {name}, without spaces, quotes, backslashes or ';'")


def _secure_properties(text: str, config: Config, port: int, cport: int) -> str:
    """Turn the broker's client listener into SASL_PLAINTEXT with PLAIN and one user (the
    controller listener stays on loopback, unauthenticated, as only the broker itself uses it)."""
    user, password = config.kafka_sasl_username, config.kafka_sasl_password
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{user}" password="{password}" user_{user}="{password}";'
    )
    protocol = config.kafka_security_protocol  # SASL_PLAINTEXT, or SASL_SSL with a certificate
    updates = {
        "listeners": f"{protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"{protocol}://127.0.0.1:{port}",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        f"listener.name.{protocol.lower()}.plain.sasl.jaas.config": jaas,
    }
    if config.tls_cert_file:
        # PEM files as they are (Kafka reads PEM since 2.7): the key and its chain in one keystore
        # file, and the CA as the truststore the broker's own inter-broker connection checks
        keystore = _private_file(Path(config.home).absolute() / "kafka-keystore.pem")
        keystore.write_text(Path(config.tls_key_file).read_text() + Path(config.tls_cert_file).read_text())
        updates |= {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": config.kafka_ssl_cafile,
        }
    lines = text.splitlines()
    for key, value in updates.items():
        found = [i for i, line in enumerate(lines) if line.startswith(key + "=")]
        if found:
            lines[found[0]] = f"{key}={value}"
        else:
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def _private_file(path: Path) -> Path:
    """Create ``path`` readable by its owner only (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    return path


# --- processes ----------------------------------------------------------------------------------
def _probe(name: str, state: dict[str, Any], config: Config) -> str:
    """'running' (ours and answering), 'stale' (ours but silent) or 'absent'."""
    if not _ours(name, state.get(f"{name}_pid")):
        return "absent"
    address = state.get(ADDRESS_KEYS[name], "")
    if name == "kafka":
        answers = kafka_ready(address, 15.0, security_options(config))
    else:
        answers = redis_ready(address, 3.0, config.redis_password)
    return "running" if answers else "stale"


def _stop_stale(name: str, state: dict[str, Any], say: Say) -> None:
    """Our process is alive but silent (hung, or still recovering): replace it rather than run two."""
    pid = state[f"{name}_pid"]
    say(f"{LABELS[name]} (pid {pid}) is not answering; stopping it to start afresh")
    _terminate(pid, signals.SIGTERM)


def _ours(name: str, pid: int | None) -> bool:
    return bool(pid) and _exists(pid) and _is_ours(name, pid)


def _is_ours(name: str, pid: int) -> bool:
    """Guard against a recycled pid: only signal a java running kafka.Kafka, or a redis-server."""
    args = _cmdline(pid)
    if not args:
        return False
    program = Path(args[0].split()[0]).name  # redis-server rewrites its title to "redis-server host:port"
    if name == "kafka":
        return program == "java" and "kafka.Kafka" in args
    return program.startswith("redis-server")


def _cmdline(pid: int) -> list[str]:
    with suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return [arg for arg in raw.split("\0") if arg]
    if Path("/proc").is_dir():
        return []  # no such process
    with suppress(OSError, subprocess.TimeoutExpired):  # macOS and other systems without /proc
        return subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], check=False, capture_output=True, text=True, timeout=5
        ).stdout.split()
    return []


def _exists(pid: int) -> bool:
    """Alive and not a zombie."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is an exited child of ours
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _terminate(pid: int, sig: int, timeout: float = STOP_TIMEOUT) -> None:
    """Signal, wait, then SIGKILL; reap our own children so none is left a zombie."""
    for signum, wait in ((sig, timeout), (signals.SIGKILL, 5.0)):
        with suppress(ProcessLookupError):
            os.kill(pid, signum)
            os.kill(pid, signals.SIGCONT)  # a frozen (SIGSTOPped) process only acts on SIGTERM once resumed
        deadline = time.monotonic() + wait
        while (alive := _exists(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive:
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)


# --- ports, files, small helpers ----------------------------------------------------------------
def _port_free(port: int) -> bool:
    """Can a server bind 127.0.0.1:port? (SO_REUSEADDR as servers use, so TIME_WAIT does not count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int, avoid: set[int], label: str, say: Say) -> int:
    for port in range(preferred, min(preferred + PORT_SCAN, 65536)):
        if port not in avoid and _port_free(port):
            if port != preferred:
                say(f"port {preferred} is taken by another program; {label} will use {port}")
            return port
    raise ServiceError(f"no free port for {label} between {preferred} and {preferred + PORT_SCAN - 1}")


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.05)):
            return True
    except OSError:
        return False


def _require_tools(config: Config, names: list[str]) -> dict[str, str]:
    """Find every program the services in ``names`` need (mvn only until the jars are resolved)."""
    tools: dict[str, str] = {}
    for tool in [t for name in names for t in _TOOLS[name] if t != "mvn" or not _jars_ready(config)]:
        if not (path := shutil.which(tool)):
            raise ServiceError(_HINTS[tool])
        tools[tool] = path
    return tools


def _check_name(name: str) -> None:
    if name not in SERVICES:
        raise ServiceError(f"unknown service {name!r}: use one of {', '.join(SERVICES)}")


def _port_of(name: str, address: str) -> int:
    if name == "kafka":
        return int(address.split(",")[0].rpartition(":")[2])
    return urlsplit(address).port or 6379


def _kafka_dir(config: Config) -> Path:
    return Path(config.home) / f"kafka-{config.kafka_version}"


def kafka_libs(config: Config) -> Path:
    """The broker's jars, Kafka's own Java client among them (bench/kafka_alone.py runs it)."""
    return _kafka_dir(config).absolute() / "libs"


def _resource(name: str) -> bytes:
    return resources.files("yadtq.processes").joinpath("resources").joinpath("kafka").joinpath(name).read_bytes()


def _read_state(config: Config) -> dict[str, Any]:
    try:
        data = json.loads(config.services_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(config: Config, state: dict[str, Any]) -> None:
    """Write-then-rename, so a reader (Config.from_env) never sees half a file."""
    path = config.services_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"({path} could not be read)"
    return "\n".join(text.splitlines()[-lines:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
