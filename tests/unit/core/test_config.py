"""Configuration: one place, YADTQ_* variables, clear errors (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yadtq.core.config import Config
from yadtq.core.errors import ConfigError


def test_defaults_are_the_standard_local_ports(tmp_path: Path) -> None:
    config = Config.from_env(env={"YADTQ_HOME": str(tmp_path)})
    assert (config.kafka_bootstrap, config.redis_url) == ("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    assert (config.task_topic, config.group_id) == ("yadtq.tasks", "yadtq.workers")


def test_environment_overrides_defaults_and_keywords_override_both(tmp_path: Path) -> None:
    env = {
        "YADTQ_HOME": str(tmp_path),
        "YADTQ_PARTITIONS": "4",
        "YADTQ_HEARTBEAT_INTERVAL": "0.5",
        "YADTQ_NAMESPACE": "lab",
        "YADTQ_IMPORTS": "a.b, c",
        "YADTQ_WORKER_RETENTION": "60",
    }
    config = Config.from_env(env=env, partitions=2)
    assert (config.partitions, config.heartbeat_interval, config.namespace) == (2, 0.5, "lab")
    assert config.worker_retention == 60.0
    assert config.imports == ("a.b", "c")
    assert config.dead_letter_topic == "lab.dead-letters"


def test_endpoints_written_by_yadtq_up_are_found(tmp_path: Path) -> None:
    (tmp_path / "services.json").write_text(
        json.dumps({"kafka_bootstrap": "127.0.0.1:9094", "redis_url": "redis://127.0.0.1:6380/0"})
    )
    config = Config.from_env(env={"YADTQ_HOME": str(tmp_path)})
    assert (config.kafka_bootstrap, config.redis_url) == ("127.0.0.1:9094", "redis://127.0.0.1:6380/0")
    explicit = Config.from_env(env={"YADTQ_HOME": str(tmp_path), "YADTQ_REDIS_URL": "redis://h:1/0"})
    assert explicit.redis_url == "redis://h:1/0"


def test_a_config_crosses_into_a_child_process_through_the_environment(tmp_path: Path) -> None:
    config = Config.from_env(env={"YADTQ_HOME": str(tmp_path)}, namespace="x1", imports=("m",), partitions=3)
    assert Config.from_env(env=config.to_env()) == config


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"YADTQ_PARTITIONS": "many"}, "YADTQ_PARTITIONS='many' is not a valid int"),
        ({"YADTQ_PARTITIONS": "0"}, "partitions must be at least 1"),
        ({"YADTQ_NAMESPACE": "a:b"}, "namespace"),
        ({"YADTQ_HEARTBEAT_TIMEOUT": "0.5"}, "heartbeat_timeout must be longer"),
        ({"YADTQ_WORKER_RETENTION": "2"}, "worker_retention must be longer than heartbeat_timeout"),
        ({"YADTQ_LOST_AFTER": "5"}, "lost_after must be longer than submit_timeout"),
        ({"YADTQ_WORKER_RETENTION": "soon"}, "YADTQ_WORKER_RETENTION='soon' is not a valid float"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(env: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env={"YADTQ_HOME": str(tmp_path), **env})


def test_unknown_keyword_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        Config.from_env(env={"YADTQ_HOME": str(tmp_path)}, partitons=3)


def test_security_settings_pass_through_to_kafka(tmp_path: Path) -> None:
    config = Config.from_env(
        env={"YADTQ_HOME": str(tmp_path)},
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_ssl_cafile="/ca.pem",
    )
    opts = config.kafka_options()
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_plain_username"] == "u"
    assert opts["ssl_cafile"] == "/ca.pem"
