"""What Kafka alone costs on this machine, with nothing of yadtq around it: the floor under the queue.

    python bench/kafka_alone.py [--n 1000] [--messages 20000]

Latency: one message sent and polled by a consumer already waiting for it (one partition, acks=all,
no linger), median and 99th percentile in µs, with kafka-python and with Kafka's own Java client
(``KafkaFloor.java``, run on the broker's jars). No queue built on Kafka gets a task from a client to
a worker faster than this, nor with a shorter tail, on the same broker.

CPU: ``--messages`` small JSON messages sent one ``send()`` each, as yadtq's client sends tasks,
and read by two kafka-python consumers in one group that decode each and commit after each poll,
as yadtq's workers do; the CPU each process spent (broker, producer, consumers) per message. That
is what the Kafka part of a drain costs before any task is recorded, claimed, run or answered.
Writes bench/results/kafka_alone.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cpu_budget import cpu_of, cpu_use, print_use, service_pid
from throughput import RESULTS

from yadtq import Config
from yadtq.processes.services import kafka_libs

JAVA_FLOOR = Path(__file__).resolve().parent / "KafkaFloor.java"
PARTITIONS = 8


@contextmanager
def scratch_topic(config: Config, partitions: int) -> Iterator[str]:
    """A topic of its own for one measurement, deleted afterwards whatever happened."""
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"{config.namespace}.alone{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**config.kafka_options())
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        try:
            yield topic
        finally:
            admin.delete_topics([topic])
    finally:
        admin.close()


def percentiles(seconds: list[float]) -> dict[str, float]:
    """Median and 99th percentile in µs, as ``throughput.py`` computes its percentiles."""
    return {
        "p50": round(statistics.median(seconds) * 1e6),
        "p99": round(statistics.quantiles(seconds, n=100, method="inclusive")[98] * 1e6),
    }


def latency(config: Config, n: int = 1000, warm_up: int = 100) -> dict[str, float]:
    """kafka-python: one message sent, then polled by a consumer already waiting for it (µs)."""
    with scratch_topic(config, 1) as topic:
        return _latency(topic, config, n, warm_up)


def _latency(topic: str, config: Config, n: int, warm_up: int) -> dict[str, float]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(**config.kafka_options(), acks="all", linger_ms=0)
    consumer = KafkaConsumer(**config.kafka_options(), enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.poll(timeout_ms=500)
        took = []
        for i in range(warm_up + n):
            start = time.perf_counter()
            producer.send(topic, b"x" * 100)
            deadline, got = time.monotonic() + 10, {}
            while not got:
                if time.monotonic() > deadline:
                    raise TimeoutError("kafka-python: no message within 10 s")
                got = consumer.poll(timeout_ms=100)
            if i >= warm_up:
                took.append(time.perf_counter() - start)
        return percentiles(took)
    finally:
        producer.close(timeout=5)
        consumer.close()


def java_latency(config: Config, n: int = 1000) -> dict[str, Any]:
    """The same with Kafka's Java client; ``{"skipped": why}`` where it cannot run here."""
    java, libs = shutil.which("java"), kafka_libs(config)
    if java is None or shutil.which("javac") is None:
        return {"skipped": "needs a JDK (java runs KafkaFloor.java from source with the JDK's compiler)"}
    if not any(libs.glob("kafka-clients-*.jar")):
        return {"skipped": f"needs the Kafka jars in {libs} (`yadtq up` fetches them)"}
    if config.secure:
        return {"skipped": "the Java program speaks plaintext only"}
    with scratch_topic(config, 1) as topic:
        cmd = [java, "-cp", f"{libs}/*", str(JAVA_FLOOR), config.kafka_bootstrap, topic, str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + n * 0.05)
    if done.returncode != 0:
        raise RuntimeError(f"KafkaFloor.java failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _consume(options: dict[str, Any], topic: str, seen: Any, owned: Any, slot: int, stop: Any) -> None:
    """One consumer of the group: decode every message and commit after each poll, until ``stop``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        **options,
        group_id=f"{topic}.group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                with seen.get_lock():
                    seen.value += len(records)
            if batches:
                consumer.commit_async()
            owned[slot] = len(consumer.assignment())
    finally:
        consumer.close()


def cpu(config: Config, messages: int = 20_000, consumers: int = 2) -> dict[str, Any]:
    """CPU per message of the broker, the producer and the consumers, from the first send to the
    moment the consumers have read every message (µs)."""
    with scratch_topic(config, PARTITIONS) as topic:
        return _cpu(topic, config, messages, consumers)


def _cpu(topic: str, config: Config, messages: int, consumers: int) -> dict[str, Any]:
    from kafka import KafkaProducer

    ctx = mp.get_context("spawn")
    seen, owned, stop = ctx.Value("l", 0), ctx.Array("i", consumers), ctx.Event()
    procs = [
        ctx.Process(target=_consume, args=(config.kafka_options(), topic, seen, owned, i, stop), daemon=True)
        for i in range(consumers)
    ]
    producer = KafkaProducer(**config.kafka_options(), acks="all", linger_ms=0)
    try:
        for proc in procs:
            proc.start()
        _wait(lambda: all(owned) and sum(owned) == PARTITIONS, 60, "the consumers to share the partitions")
        time.sleep(1)  # the group settled
        pids = {"kafka broker": [service_pid(config, "kafka")], "producer": [os.getpid()]}
        pids["consumers"] = [p.pid for p in procs if p.pid is not None]
        before = cpu_of(pids)
        start = time.perf_counter()
        for i in range(messages):
            producer.send(topic, json.dumps({"id": i, "op": "add", "args": [i, i]}).encode())
        producer.flush(timeout=60)
        _wait(lambda: seen.value >= messages, 120, "the consumers to read every message")
        wall = time.perf_counter() - start
        after = cpu_of(pids)
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        producer.close(timeout=5)
    return {
        "messages": messages,
        "consumers": consumers,
        **cpu_use(before, after, messages, wall, "per_s", "message"),
        "cores": os.cpu_count() or 1,
        "load_avg": os.getloadavg()[0],
    }


def _wait(ready: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:g} s for {what}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="round trips for each latency")
    parser.add_argument("--messages", type=int, default=20_000, help="messages for the CPU measurement")
    args = parser.parse_args()
    config = Config.from_env(namespace=f"alone{uuid.uuid4().hex[:8]}", log_level="WARNING")
    out = {
        "latency_us": {"kafka-python": latency(config, args.n), "java": java_latency(config, args.n)},
        "cpu": cpu(config, args.messages),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kafka_alone.json").write_text(json.dumps(out, indent=2) + "\n")
    for client, figures in out["latency_us"].items():
        print(f"send -> a waiting consumer, {client:12} {figures}")
    result = out["cpu"]
    print(f"{result['messages']} messages, {result['per_s']}/s, {result['consumers']} consumers")
    print_use(result, "per_s", "message")


if __name__ == "__main__":
    main()
