"""Fixtures that own lifecycles: the real services (session), a fresh namespace per test, workers.

Services: if Kafka and Redis already answer at the configured endpoints (``yadtq up`` was run, or
``YADTQ_KAFKA_BOOTSTRAP`` / ``YADTQ_REDIS_URL`` point somewhere), they are reused; otherwise the
session starts them with :func:`yadtq.processes.services.up` and stops them at the end. Each test gets its own
namespace, so its topics, consumer group and keys are its own, and deletes them afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from yadtq.client.client import Client, TaskHandle
from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable
from yadtq.processes import services
from yadtq.processes.pool import Pool
from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
#: Worker settings for tests: fast heartbeats so failure detection takes about a second.
FAST = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2.0, "shutdown_grace": 5.0}


@pytest.fixture(scope="session")
def base_config() -> Iterator[Config]:
    """A config pointing at live services; starts them when nothing answers."""
    config = Config.from_env(imports=("tests.ops_fixture",))
    started = False
    if not (services.redis_ready(config.redis_url, 2) and services.kafka_ready(config.kafka_bootstrap, 10)):
        state = services.up(config)
        config = config.replace(kafka_bootstrap=state["kafka_bootstrap"], redis_url=state["redis_url"])
        started = True
    os.environ["YADTQ_KAFKA_BOOTSTRAP"] = config.kafka_bootstrap
    os.environ["YADTQ_REDIS_URL"] = config.redis_url
    yield config
    if started:
        services.down(config)


@pytest.fixture
def make_config(base_config: Config) -> Iterator[Callable[..., Config]]:
    """Configs with a namespace of their own; their keys and topics are deleted after the test."""
    made: list[Config] = []

    def make(**overrides: object) -> Config:
        cfg = base_config.replace(namespace=f"t{uuid.uuid4().hex[:10]}", **{**FAST, **overrides})
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        Backend(cfg).purge()
        try:
            Broker(cfg).delete_topics()
        except Exception:  # a Kafka restart test may leave the broker briefly unavailable
            time.sleep(3)
            Broker(cfg).delete_topics()


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def client(config: Config) -> Iterator[Client]:
    with Client(config) as c:
        yield c


@pytest.fixture
def pool(config: Config, tmp_path: Path) -> Iterator[Pool]:
    with Pool(config, log_dir=tmp_path / "workers") as p:
        yield p


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` seconds."""

    def wait(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    return wait


def cli(config: Config, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``yadtq ARGS`` as a user would, with this config in the environment."""
    env = {**os.environ, **config.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "yadtq", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: Figures of the fault tests' last run, quoted by docs/reliability.md.
FIGURES = ROOT / "build" / "fault-suite.json"


def record_figures(name: str, values: dict[str, object]) -> None:
    """Add one scenario's figures to build/fault-suite.json."""
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[name] = {**values, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    FIGURES.write_text(json.dumps(data, indent=2))


def submit_until_accepted(client: Client, timeout: float) -> TaskHandle:
    """Submit ``add(1, 2)``, waiting for Kafka's acknowledgement, and try again while a service that
    was just restarted still refuses it; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.submit_with("add", [1, 2], wait=True)
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def live_workers(client: Client, n: int) -> Callable[[], bool]:
    """A condition: ``n`` workers are heartbeating and Kafka gave each some partitions."""

    def check() -> bool:
        frame = client.workers()
        serving = frame["state"].isin(["idle", "busy"]) & frame["partitions"].fillna("").astype(str).ne("")
        return int(serving.sum()) >= n

    return check


# --- private services, for tests that crash, freeze or restart them ---------------------------------
#: Set to a directory to keep one private Kafka + Redis between test sessions (handy while iterating
#: on the fault tests); by default each session starts its own under a temporary directory.
PRIVATE_HOME_ENV = "YADTQ_TEST_PRIVATE_HOME"


@pytest.fixture(scope="session")
def private_services(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """A Kafka and a Redis of this test session alone, on ports of their own.

    Fault tests SIGKILL, SIGSTOP and restart services: doing that to the shared ones would break
    every other user of the machine (and every other test running beside them), so they get theirs.
    The broker's jars are linked from the shared home, so no second Maven download is needed.
    """
    home = Path(os.environ.get(PRIVATE_HOME_ENV) or tmp_path_factory.mktemp("private-services"))
    config = base_config.replace(home=home, kafka_port=19092, kafka_controller_port=19093, redis_port=16379)
    jars = Path(base_config.home) / f"kafka-{config.kafka_version}"
    mine = home / jars.name
    if jars.is_dir() and not mine.exists():
        home.mkdir(parents=True, exist_ok=True)
        mine.symlink_to(jars.absolute(), target_is_directory=True)
    already = services.status(config)
    reused = already["kafka"]["running"] and already["redis"]["running"]
    state = services.up(config, say=lambda _line: None)
    config = config.replace(kafka_bootstrap=state["kafka_bootstrap"], redis_url=state["redis_url"])
    yield config
    if not reused:
        services.down(config, say=lambda _line: None)


@pytest.fixture
def make_private(private_services: Config) -> Iterator[Callable[..., Config]]:
    """Like ``make_config``, on the private services; keys and topics go afterwards."""
    # An earlier test that failed half-way may have left a service stopped: bring it back first.
    services.up(private_services, say=lambda _line: None)
    made: list[Config] = []

    def make(**overrides: object) -> Config:
        cfg = private_services.replace(namespace=f"p{uuid.uuid4().hex[:10]}", **{**FAST, **overrides})
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        _clean_up(cfg)


def _clean_up(cfg: Config) -> None:
    """Delete a namespace's keys and topics; a service just restarted may need a few seconds."""
    deadline = time.monotonic() + 60
    for step in (lambda: Backend(cfg).purge(), lambda: Broker(cfg).delete_topics()):
        while True:
            try:
                step()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
