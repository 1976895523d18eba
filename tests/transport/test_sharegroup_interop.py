"""The share-group consumer (:mod:`yadtq.transport.sharegroup`) against the live broker, and beside Kafka's own.

- **interop**: Kafka's Java ``KafkaShareConsumer`` (``tests/java/ShareInterop.java``, compiled here
  against the broker's ``kafka-clients`` jar) and our :class:`ShareConsumer`, in one share group on
  one topic, together receive every record exactly once, and every record ends acknowledged;
- **release**: a record one member RELEASEs goes to another, its delivery count now 2;
- **renew**: a record whose lock the member renews stays its own past the lock's duration, while a
  record beside it that is not renewed goes, on the lock's expiry, to the other member.

Each test has its own topic (one partition) and share group, deleted afterwards.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.conftest import ROOT
from yadtq.core.config import Config
from yadtq.transport.sharegroup import ACCEPT, RELEASE, ShareConsumer, ShareRecord
from yadtq.transport.sharegroup import admin as share_admin

pytestmark = [pytest.mark.services, pytest.mark.slow]

log = logging.getLogger(__name__)
JAVA_SOURCE = ROOT / "tests" / "java" / "ShareInterop.java"
#: The broker's floor for ``share.record.lock.duration.ms`` unless lowered in server.properties.
LOCK_MS = 15_000
#: Java's log lines go to stderr: its stdout carries the records' values only.
LOG4J2 = """\
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
"""


@dataclass
class Share:
    """One test's topic (one partition) and share group, with an admin client to look at them."""

    topic: str
    group: str
    admin: KafkaAdminClient
    options: dict[str, Any]

    def configure(self, **settings: str) -> None:
        answers = share_admin.configure(self.admin, self.group, {k.replace("_", "."): v for k, v in settings.items()})
        assert answers == {self.group: "OK"}, answers

    def produce(self, values: list[str]) -> None:
        producer = KafkaProducer(**self.options, acks="all")
        try:
            for value in values:
                producer.send(self.topic, value.encode())
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)

    def consumer(self, name: str, consumers: list[ShareConsumer]) -> ShareConsumer:
        """A member of the group, joined and given the partition (closed by the test's finally)."""
        member = ShareConsumer(self.group, self.topic, f"{name}-{self.group}", **self.options)
        consumers.append(member)
        assert member.wait_assigned(30), f"{name} got no partition within 30 s"
        return member

    def lag(self) -> int | None:
        """Records of the partition not acknowledged yet (None before the group has read any)."""
        offsets = share_admin.start_offsets(self.admin, self.group, self.topic)
        return offsets[0][1] if 0 in offsets else None


@pytest.fixture
def share(base_config: Config) -> Iterator[Share]:
    options = base_config.kafka_options()
    admin = KafkaAdminClient(**options, request_timeout_ms=15_000)
    run = uuid.uuid4().hex[:10]
    topic, group = f"sg-interop-{run}", f"sg-interop-{run}"
    admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=15_000)
    try:
        yield Share(topic, group, admin, options)
    finally:
        try:
            _delete_group(admin, group)
            admin.delete_topics([topic], timeout_ms=15_000)
        finally:
            admin.close()


def _delete_group(admin: KafkaAdminClient, group: str, timeout: float = 15.0) -> None:
    """Delete the share group; a member that did not leave (a killed JVM) keeps it non-empty until
    its session times out, so try again for a while, then leave it (with a warning)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = admin.delete_groups([group]).get(group)  # "OK" or an error's name
        if answer in ("OK", "GroupIdNotFoundError"):
            return
        if time.monotonic() > deadline:
            log.warning("share group %s not deleted: %s", group, answer)
            return
        time.sleep(0.5)


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def close_all(consumers: list[ShareConsumer]) -> None:
    for member in consumers:
        try:
            member.close()
        except Exception:  # the test's own failure matters more than a close's
            log.exception("closing %s", member.client_id)


# --- Kafka's Java share consumer --------------------------------------------------------------
@pytest.fixture
def java_consumer(base_config: Config, tmp_path: Path) -> Callable[..., list[str]]:
    """``(share, stdout, stderr) -> argv``: the command line of ShareInterop, compiled into tmp_path."""
    libs = Path(base_config.home) / f"kafka-{base_config.kafka_version}" / "libs"
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        pytest.skip("javac/java not installed: the interop test runs Kafka's Java share consumer")
    if not list(libs.glob("kafka-clients-*.jar")):
        pytest.skip(f"no kafka-clients jar in {libs} (run `yadtq up` once to download Kafka)")
    classes = tmp_path / "classes"
    classes.mkdir()
    compiled = subprocess.run(
        [javac, "-cp", f"{libs}/*", "-d", str(classes), str(JAVA_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, f"javac failed:\n{compiled.stderr}"
    log4j2 = tmp_path / "log4j2.properties"
    log4j2.write_text(LOG4J2)

    def argv(share: Share, *, first_ms: int, idle_ms: int, max_ms: int, per_record_ms: int, batch: int) -> list[str]:
        return [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={log4j2}",
            "-cp",
            f"{libs}/*:{classes}",
            "ShareInterop",
            ",".join(share.options["bootstrap_servers"]),
            share.group,
            share.topic,
            str(first_ms),
            str(idle_ms),
            str(max_ms),
            str(per_record_ms),
            str(batch),
        ]

    return argv


def test_java_and_python_share_one_group_each_record_once(
    share: Share, java_consumer: Callable[..., list[str]], tmp_path: Path
) -> None:
    share.configure(share_auto_offset_reset="earliest")
    produced = [f"interop-{i}-{uuid.uuid4().hex[:6]}" for i in range(400)]
    consumers: list[ShareConsumer] = []
    out, err = tmp_path / "java.out", tmp_path / "java.err"
    argv = java_consumer(share, first_ms=45_000, idle_ms=4_000, max_ms=90_000, per_record_ms=10, batch=5)
    ours: list[ShareRecord] = []
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        python = share.consumer("python", consumers)

        def both_members() -> bool:
            assert process.poll() is None, f"the Java consumer exited early:\n{err.read_text()}"
            members = share_admin.describe(share.admin, share.group)["members"]
            return len(members) == 2 and all(m["partitions"] == [0] for m in members)

        # Records only once both are members: otherwise one may take them all before the other joins.
        wait_until(both_members, 45, "the Java and the Python member to be assigned the partition")
        share.produce(produced)

        deadline = time.monotonic() + 90
        java_gone_at: float | None = None
        while True:
            now = time.monotonic()
            assert now < deadline, f"no end after 90 s: ours {len(ours)}, Java still running"
            if java_gone_at is None and process.poll() is not None:
                java_gone_at = now
            # Go on a little after Java has left: whatever it released at close would come here.
            if java_gone_at is not None and now - java_gone_at > 2:
                break
            for record in python.poll(5, 0.2):
                time.sleep(0.01)  # "processing", so that the Java member gets records too
                ours.append(record)
                python.acknowledge(record.partition, record.offset, ACCEPT)
        python.flush()
        assert process.returncode == 0, f"the Java consumer failed ({process.returncode}):\n{err.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        close_all(consumers)

    theirs = out.read_text().splitlines()
    mine = [r.value.decode() for r in ours if r.value is not None]
    strangers = set(theirs) - set(produced)
    assert not strangers, f"Java's stdout holds more than values: {sorted(strangers)[:5]}"
    log.info("records: Python %d, Java %d", len(mine), len(theirs))
    assert len(set(mine)) == len(mine), "the Python member got a record twice"
    assert len(set(theirs)) == len(theirs), "the Java member got a record twice"
    assert not set(mine) & set(theirs), f"{len(set(mine) & set(theirs))} records went to both members"
    assert set(mine) | set(theirs) == set(produced), f"{len(set(produced) - set(mine) - set(theirs))} records lost"
    assert mine and theirs, f"one member got nothing: Python {len(mine)}, Java {len(theirs)}"
    assert all(r.delivery_count == 1 for r in ours)
    # Every record acknowledged (ACCEPTed by one or the other): nothing left for the group.
    wait_until(lambda: share.lag() == 0, 15, "the group's lag to reach 0 (every record acknowledged)")


def test_a_released_record_goes_to_another_member(share: Share) -> None:
    share.configure(share_auto_offset_reset="earliest")
    share.produce(["released"])
    consumers: list[ShareConsumer] = []
    try:
        first = share.consumer("first", consumers)
        [record] = wait_until(lambda: first.poll(1, 0.5), 20, "the first member to acquire the record")
        assert (record.offset, record.value, record.delivery_count) == (0, b"released", 1)
        second = share.consumer("second", consumers)
        assert second.poll(1, 1.0) == [], "the second member got a record the first one holds"
        first.acknowledge(record.partition, record.offset, RELEASE)
        first.flush()
        [again] = wait_until(lambda: second.poll(1, 0.5), 20, "the released record to reach the second member")
        assert (again.offset, again.value, again.delivery_count) == (0, b"released", 2)
        second.acknowledge(again.partition, again.offset, ACCEPT)
        second.flush()
        assert first.poll(1, 1.0) == [], "an ACCEPTed record came back"
        wait_until(lambda: share.lag() == 0, 15, "the group's lag to reach 0")
    finally:
        close_all(consumers)


def test_a_renewed_lock_outlives_its_duration_and_an_expired_one_moves_on(share: Share) -> None:
    share.configure(
        share_auto_offset_reset="earliest",
        share_record_lock_duration_ms=str(LOCK_MS),
        share_renew_acknowledge_enable="true",
    )
    share.produce(["renewed", "expires"])
    consumers: list[ShareConsumer] = []
    try:
        holder = share.consumer("holder", consumers)
        held: list[ShareRecord] = []
        wait_until(lambda: held.extend(holder.poll(2 - len(held), 0.5)) or len(held) == 2, 20, "both records")
        acquired_at = time.monotonic()
        assert holder.lock_timeout == LOCK_MS / 1000, "the group's lock duration was not applied"
        by_value = {r.value: r for r in held}
        renewed, expires = by_value[b"renewed"], by_value[b"expires"]
        assert renewed.delivery_count == expires.delivery_count == 1

        other = share.consumer("other", consumers)
        got: list[ShareRecord] = []
        last_renew = acquired_at
        # Well past the lock (15 s): "renewed" is renewed every 4 s, "expires" never.
        while time.monotonic() - acquired_at < LOCK_MS / 1000 + 6:
            if time.monotonic() - last_renew >= 4:
                holder.renew([(renewed.partition, renewed.offset)])
                holder.flush()
                last_renew = time.monotonic()
            for record in other.poll(5, 0.5):
                got.append(record)
                if record.value == b"expires":
                    other.acknowledge(record.partition, record.offset, ACCEPT)
            assert all(r.value != b"renewed" for r in got), (
                f"the renewed record reached the other member after {time.monotonic() - acquired_at:.1f} s"
            )
        other.flush()
        assert [(r.value, r.delivery_count) for r in got] == [(b"expires", 2)], (
            "the record whose lock expired did not come to the other member (once, second delivery)"
        )
        # The lock is still the holder's: its ACCEPT counts, and nothing is left unacknowledged.
        holder.acknowledge(renewed.partition, renewed.offset, ACCEPT)
        holder.flush()
        wait_until(lambda: share.lag() == 0, 15, "the group's lag to reach 0 (the renewed record accepted)")
        assert other.poll(5, 1.0) == []
    finally:
        close_all(consumers)
