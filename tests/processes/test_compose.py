"""docker-compose.yml is valid and describes what the docs promise (no Docker engine needed).

``docker compose config`` (or Debian's ``docker-compose config``) parses, validates and normalises the
file without talking to an engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"


def _config_command() -> tuple[list[str], str] | None:
    """``docker compose config`` (the v2 plugin, JSON) or Debian's ``docker-compose config`` (YAML)."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60, check=False).returncode == 0
    ):
        return [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"], "json"
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy, "-f", str(COMPOSE_FILE), "config"], "yaml"
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    found = _config_command()
    if found is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    command, fmt = found
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    if fmt == "json":
        return json.loads(done.stdout)
    import yaml

    return yaml.safe_load(done.stdout)


def _ports(service: dict[str, Any]) -> list[tuple[int, str]]:
    """(container port, host port) pairs, from either the long or the short syntax."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((int(port["target"]), str(port["published"])))
        else:
            *_, published, target = str(port).split("/")[0].split(":")
            pairs.append((int(target), published))
    return pairs


def test_three_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker"} <= set(compose["services"])
    assert compose["services"]["kafka"]["image"] == "apache/kafka:4.3.1"


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert not _ports(worker)
    assert "build" in worker
    assert worker["command"] == ["python", "-m", "yadtq", "worker"]


def test_services_have_healthchecks_and_workers_wait_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    depends = services["worker"]["depends_on"]
    assert {name: dep["condition"] for name, dep in depends.items()} == {
        "kafka": "service_healthy",
        "redis": "service_healthy",
    }


def test_worker_talks_to_the_containers(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["YADTQ_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert env["YADTQ_REDIS_URL"].startswith("redis://redis:6379")


def test_share_group_settings_match_the_local_broker(compose: dict[str, Any]) -> None:
    """The workers' default dispatch needs the same share-group settings in Docker as ``yadtq up``."""
    lines = (ROOT / "yadtq" / "processes" / "resources" / "kafka" / "server.properties").read_text().splitlines()
    local = dict(line.split("=", 1) for line in lines if line.startswith(("share.", "group.share.")))
    assert {"share.coordinator.state.topic.num.partitions", "group.share.min.record.lock.duration.ms"} <= set(local)
    env = {k: str(v) for k, v in compose["services"]["kafka"]["environment"].items()}
    for key, value in local.items():
        assert env.get("KAFKA_" + key.upper().replace(".", "_")) == value, key


def test_kafka_listeners_for_containers_and_host(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert env["CLUSTER_ID"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:19092,PLAINTEXT_HOST://localhost:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert _ports(kafka) == [(9092, "9092")]
    assert "--appendonly" in compose["services"]["redis"]["command"]
