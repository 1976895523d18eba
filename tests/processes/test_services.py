"""The local services launcher against a real Kafka (java) and a real redis-server.

One Kafka + Redis pair is started for the module in a temporary home on free ports and reused; the
tests run in file order and the last one takes it down. The Kafka jars come from the shared cache
(``~/.cache/yadtq/kafka-<version>``, linked into the temporary home) when it has been resolved before.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from yadtq.core.config import Config
from yadtq.core.errors import ServiceError
from yadtq.processes import services

JAR_CACHE = Config().home / f"kafka-{Config().kafka_version}"
pytestmark = pytest.mark.skipif(
    not (shutil.which("java") and shutil.which("redis-server"))
    or not ((JAR_CACHE / services.RESOLVED_MARKER).is_file() or shutil.which("mvn")),
    reason="needs java, redis-server and (until the Kafka jars are cached) mvn on PATH",
)


def _free_ports(count: int) -> list[int]:
    """Distinct ports the kernel just handed out (all held at once, so no two are equal)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _home(tmp_path_factory: pytest.TempPathFactory, name: str, *, jar_cache: bool = True) -> Path:
    home = tmp_path_factory.mktemp(name)
    if jar_cache and (JAR_CACHE / services.RESOLVED_MARKER).is_file():
        (home / JAR_CACHE.name).symlink_to(JAR_CACHE, target_is_directory=True)
    return home


def _config(home: Path, kafka_port: int, controller_port: int, redis_port: int) -> Config:
    return Config.from_env(
        env={}, home=home, kafka_port=kafka_port, kafka_controller_port=controller_port, redis_port=redis_port
    )


def _gone(pid: int) -> bool:
    return not services._exists(pid)


@dataclass
class Stack:
    """What the module fixture started, and what ``up`` said while starting it."""

    config: Config
    state: dict[str, Any]
    said: list[str]
    blocked_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = _home(tmp_path_factory, "services")
    kafka_port, controller_port, redis_port = _free_ports(3)
    config = _config(home, kafka_port, controller_port, redis_port)
    # Someone else's program holds the configured Redis port: up must move Redis elsewhere.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", redis_port))
    blocker.listen()
    said: list[str] = []
    try:
        state = services.up(config, say=said.append)
        yield Stack(config, state, said, redis_port)
    finally:
        services.down(config, say=lambda _: None)
        blocker.close()


def test_up_starts_both_and_they_answer(stack: Stack) -> None:
    state = stack.state
    assert state["kafka_bootstrap"] == f"127.0.0.1:{stack.config.kafka_port}"
    assert services.kafka_ready(state["kafka_bootstrap"], timeout=30)
    assert services.redis_ready(state["redis_url"], timeout=5)
    client = redis.Redis.from_url(state["redis_url"])
    try:
        assert client.ping()
    finally:
        client.close()
    assert json.loads(stack.config.services_file.read_text()) == state
    status = services.status(stack.config)
    assert status["kafka"] == {
        "running": True,
        "pid": state["kafka_pid"],
        "address": state["kafka_bootstrap"],
        "log": state["kafka_log"],
    }
    assert status["redis"]["running"] and status["redis"]["pid"] == state["redis_pid"]
    assert any(line.startswith("Kafka: 127.0.0.1:") for line in stack.said)
    assert Path(state["kafka_log"]).is_file() and Path(state["redis_log"]).is_file()


def test_config_finds_the_recorded_endpoints(stack: Stack) -> None:
    found = Config.from_env(env={}, home=stack.config.home)
    assert found.kafka_bootstrap == stack.state["kafka_bootstrap"]
    assert found.redis_url == stack.state["redis_url"]


def test_taken_redis_port_falls_back_and_is_recorded(stack: Stack) -> None:
    port = int(stack.state["redis_url"].rsplit(":", 1)[1].split("/")[0])
    assert port != stack.blocked_port
    assert f"port {stack.blocked_port} is taken by another program; Redis will use {port}" in stack.said
    recorded = json.loads(stack.config.services_file.read_text())
    assert recorded["redis_url"] == f"redis://127.0.0.1:{port}/0"


def test_second_up_starts_nothing(stack: Stack) -> None:
    said: list[str] = []
    again = services.up(stack.config, say=said.append)
    assert (again["kafka_pid"], again["redis_pid"]) == (stack.state["kafka_pid"], stack.state["redis_pid"])
    assert said == [
        f"Kafka already running at {stack.state['kafka_bootstrap']} (pid {stack.state['kafka_pid']})",
        f"Redis already running at {stack.state['redis_url']} (pid {stack.state['redis_pid']})",
    ]


def test_redis_restart_keeps_data(stack: Stack) -> None:
    url, old_pid = stack.state["redis_url"], stack.state["redis_pid"]
    client = redis.Redis.from_url(url)
    client.set("yadtq-test:kept", "yes")
    client.close()
    services.stop(stack.config, "redis")
    assert _gone(old_pid)
    assert services.status(stack.config)["redis"]["running"] is False
    state = services.start(stack.config, "redis")
    assert state["redis_url"] == url and state["redis_pid"] != old_pid
    client = redis.Redis.from_url(url)
    try:
        assert client.get("yadtq-test:kept") == b"yes"  # replayed from the append-only file
    finally:
        client.close()
    stack.state = state


def test_killed_kafka_comes_back_on_the_same_port(stack: Stack) -> None:
    old_pid = stack.state["kafka_pid"]
    services.stop(stack.config, "kafka", signal=signal.SIGKILL)
    assert _gone(old_pid)
    state = services.start(stack.config, "kafka")
    assert state["kafka_bootstrap"] == stack.state["kafka_bootstrap"] and state["kafka_pid"] != old_pid
    assert services.kafka_ready(state["kafka_bootstrap"], timeout=30)
    stack.state = state


def test_down_leaves_a_pid_that_is_not_ours_alone(tmp_path: Path) -> None:
    config = _config(tmp_path, *_free_ports(3))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        config.services_file.write_text(json.dumps({"redis_pid": stranger.pid, "redis_url": "redis://127.0.0.1:1/0"}))
        said: list[str] = []
        services.down(config, say=said.append)
        assert stranger.poll() is None
        assert any("belongs to another program" in line for line in said)
        assert not config.services_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("tool", ["java", "mvn", "redis-server"])
def test_missing_tool_is_one_clear_sentence(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    home = _home(tmp_path_factory, f"missing-{tool}", jar_cache=False)  # no jars yet, so mvn is needed too
    config = _config(home, *_free_ports(3))
    real_which = shutil.which

    def which(name: str, *args: Any, **kwargs: Any) -> str | None:
        return None if name == tool else real_which(name, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", which)
    with pytest.raises(ServiceError) as caught:
        services.up(config, say=lambda _: None)
    message = str(caught.value)
    assert message.startswith(f"{tool} not found: install")
    assert "\n" not in message and "docker compose up -d" in message
    assert not config.services_file.exists() and not (home / "kafka-data").exists()


def test_down_stops_both_and_then_says_nothing_is_running(stack: Stack) -> None:
    pids = stack.state["kafka_pid"], stack.state["redis_pid"]
    said: list[str] = []
    services.down(stack.config, say=said.append)
    assert all(_gone(pid) for pid in pids)
    assert [line.split(" at ")[0] for line in said] == ["Stopped Kafka", "Stopped Redis"]
    assert not stack.config.services_file.exists()
    said.clear()
    services.down(stack.config, say=said.append)
    assert said == ["Nothing is running."]
    assert all(services.status(stack.config)[name]["running"] is False for name in services.SERVICES)
