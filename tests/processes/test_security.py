"""Secured services (``YADTQ_SECURE=1 yadtq up``): Kafka with SASL PLAIN, Redis with an ACL user,
and the same over TLS with a certificate made in the test.

A Kafka and a Redis of this module alone are started secured, with passwords made up here. Workers
and clients that have the credentials work end to end; a client without them (or with a wrong one)
gets one ``ServiceUnavailable`` that names the service, and leaves nothing behind.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient

from tests.conftest import FAST, live_workers
from yadtq import Client, ServiceUnavailable
from yadtq.core.config import Config
from yadtq.processes import services
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]


def quiet(_line: str) -> None:
    pass


def start_secured(base: Config, home: Path, ports: tuple[int, int, int], **extra: object) -> Config:
    """Secured services of this module alone, in ``home``, with passwords made up here."""
    jars = Path(base.home) / f"kafka-{base.kafka_version}"
    if jars.is_dir():
        (home / jars.name).symlink_to(jars.absolute(), target_is_directory=True)
    settings = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "yadtq",
        "kafka_sasl_password": secrets.token_hex(12),
        "redis_username": "yadtq",
        "redis_password": secrets.token_hex(12),
        "submit_timeout": 4.0,
        "namespace": f"s{secrets.token_hex(5)}",
        **FAST,
        **extra,
    }
    kafka, controller, redis_port = ports
    config = base.replace(
        home=home, kafka_port=kafka, kafka_controller_port=controller, redis_port=redis_port, secure=True, **settings
    )
    state = services.up(config, say=quiet)
    return config.replace(kafka_bootstrap=state["kafka_bootstrap"], redis_url=state["redis_url"])


@pytest.fixture(scope="module")
def secured(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    home = tmp_path_factory.mktemp("secure-services")
    try:
        yield start_secured(base_config, home, (19192, 19193, 16479))
    finally:
        services.down(base_config.replace(home=home), say=quiet)


@pytest.fixture(scope="module")
def tls(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """The same over TLS, with a self-signed certificate for 127.0.0.1 made here."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test's certificate (scripts/install-system.sh installs it)")
    home = tmp_path_factory.mktemp("tls-services")
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    files = {"tls_cert_file": str(cert), "tls_key_file": str(key), "kafka_ssl_cafile": str(cert)}
    try:
        yield start_secured(base_config, home, (19292, 19293, 16579), kafka_security_protocol="SASL_SSL", **files)
    finally:
        services.down(base_config.replace(home=home), say=quiet)


def test_the_secured_services_keep_their_passwords_private(secured: Config) -> None:
    state_text = secured.services_file.read_text()
    assert secured.redis_password not in state_text and secured.kafka_sasl_password not in state_text
    for name in ("server.properties", "redis-users.acl"):
        path = Path(secured.home) / name
        assert path.stat().st_mode & 0o077 == 0, f"{name} is readable by others"
    assert secured.redis_url.startswith(f"redis://{secured.redis_username}@")


def test_workers_and_clients_with_the_credentials_work(secured: Config, tmp_path: Path, wait_for) -> None:
    with Client(secured) as client, Pool(secured, log_dir=tmp_path) as pool:
        pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker on the secured services")
        assert client.submit_with("add", [2, 3], wait=True).result(timeout=30) == 5
        assert client.submit("mul", 4, 5).result(timeout=30) == 20


@pytest.mark.parametrize(
    "change",
    [
        {"redis_password": ""},
        {"redis_password": "wrong"},
        {"redis_url": "redis://127.0.0.1:16479/0"},  # no user name: the default user is off
    ],
    ids=["redis-no-password", "redis-wrong-password", "redis-no-user"],
)
def test_a_client_without_the_redis_credentials_gets_one_clear_error(secured: Config, change: dict[str, str]) -> None:
    url = change.get("redis_url", secured.redis_url).replace("16479", str(_port(secured.redis_url)))
    config = secured.replace(**{**change, "redis_url": url})
    with Client(config) as client, pytest.raises(ServiceUnavailable, match=r"(?i)Redis at .*(password|authentication)"):
        client.status("0" * 32)
    # and nothing is readable without them
    raw = redis.Redis.from_url(url, password=config.redis_password or None, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        raw.keys("*")
    raw.close()


@pytest.mark.parametrize(
    "change",
    [
        {"kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": ""},
        {"kafka_sasl_password": "wrong"},
    ],
    ids=["kafka-no-sasl", "kafka-wrong-password"],
)
def test_a_client_without_the_kafka_credentials_gets_one_clear_error_and_no_access(
    secured: Config, change: dict[str, str]
) -> None:
    config = secured.replace(namespace=f"s{secrets.token_hex(5)}", **change)
    with Client(config) as client:
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="Kafka at"):
            client.submit_with("add", [1, 2], wait=True)
        took = time.monotonic() - began
    assert took < 3 * config.submit_timeout + 5, f"the refusal took {took:.1f}s"
    with Client(secured.replace(namespace=config.namespace)) as owner:
        assert owner.backend.count_tasks() == 0, "a refused client left a task record"
    admin = KafkaAdminClient(**secured.kafka_options(), request_timeout_ms=10_000)
    try:
        assert config.task_topic not in admin.list_topics(), "a refused client created its topic"
    finally:
        admin.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_workers_and_clients_work_over_tls(tls: Config, tmp_path: Path, wait_for) -> None:
    assert tls.redis_url.startswith("rediss://") and "SASL_SSL" in (Path(tls.home) / "server.properties").read_text()
    test_workers_and_clients_with_the_credentials_work(tls, tmp_path, wait_for)


@pytest.mark.parametrize(
    "change",
    [
        {"kafka_security_protocol": "SASL_PLAINTEXT"},  # speaking plain text to the TLS listener
        {"kafka_ssl_cafile": ""},  # not trusting the self-signed certificate
    ],
    ids=["kafka-without-tls", "kafka-untrusted-certificate"],
)
def test_a_kafka_client_without_tls_or_trust_gets_one_clear_error(tls: Config, change: dict[str, str]) -> None:
    config = tls.replace(namespace=f"s{secrets.token_hex(5)}", **change)
    with Client(config) as client, pytest.raises(ServiceUnavailable, match="Kafka at"):
        client.submit_with("add", [1, 2], wait=True)


@pytest.mark.parametrize(
    "url",
    [
        lambda u: u.replace("rediss://", "redis://").split("?")[0],  # plain text to the TLS port
        lambda u: u.split("?")[0],  # TLS, but not trusting the self-signed certificate
    ],
    ids=["redis-without-tls", "redis-untrusted-certificate"],
)
def test_a_redis_client_without_tls_or_trust_gets_one_clear_error(tls: Config, url) -> None:
    with (
        Client(tls.replace(redis_url=url(tls.redis_url))) as client,
        pytest.raises(ServiceUnavailable, match="Redis at"),
    ):
        client.status("0" * 32)
