"""``yadtq monitor --metrics-port N``: the queue as Prometheus metrics, read at each scrape.

A collector (not counters kept in this process) so that the exporter can start any time, be
restarted, and still report the same figures as the dashboard: every scrape reads the task and
worker tables from Redis and the partition offsets from Kafka (each with a deadline), through the
read models in ``monitor.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from yadtq.client.client import Client
from yadtq.core.errors import YadtqError
from yadtq.monitoring.monitor import STATUSES, latencies, partitions, share_group, shared_dispatch

#: Tasks read per scrape (newest first).
SCRAPED_TASKS = 5000
#: Throughput is tasks finished in this many seconds before the scrape, per second.
THROUGHPUT_WINDOW = 60.0
#: Latency histogram buckets, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class QueueCollector:
    """Reads the queue at each scrape and yields its metric families."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        try:
            tasks = self.client.tasks(limit=SCRAPED_TASKS)
            workers = self.client.workers()
        except YadtqError:
            up = GaugeMetricFamily("yadtq_up", "1 if Redis answered this scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("yadtq_up", "1 if Redis answered this scrape")
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily("yadtq_tasks", "Tasks by status (of the newest read)", labels=["status"])
        counts = tasks["status"].value_counts()
        for status in STATUSES:
            by_status.add_metric([status], float(counts.get(status, 0)))
        yield by_status
        depth = GaugeMetricFamily("yadtq_queue_depth", "Tasks waiting: queued or retrying")
        depth.add_metric([], float(counts.get("queued", 0) + counts.get("retrying", 0)))
        yield depth

        done = latencies(tasks)
        now = time.time()
        recent = done[done["finished_at"].map(lambda t: t.timestamp()) >= now - THROUGHPUT_WINDOW]
        rate = GaugeMetricFamily("yadtq_throughput", f"Tasks finished per second over the last {THROUGHPUT_WINDOW:g}s")
        rate.add_metric([], len(recent) / THROUGHPUT_WINDOW)
        yield rate
        histogram = HistogramMetricFamily("yadtq_task_latency_seconds", "Submit-to-finish latency of finished tasks")
        values = done["latency"]
        buckets = [(str(b), float((values <= b).sum())) for b in BUCKETS] + [("+Inf", float(len(values)))]
        histogram.add_metric([], buckets, float(values.sum()))
        yield histogram
        states = GaugeMetricFamily("yadtq_workers", "Workers by state", labels=["state"])
        for state, n in workers["state"].value_counts().items():
            states.add_metric([str(state)], float(n))
        yield states

        lag = GaugeMetricFamily(
            "yadtq_partition_lag",
            "Messages not yet committed (acknowledged, with shared dispatch)",
            labels=["partition"],
        )
        try:
            if shared_dispatch(self.client.config):
                for row in share_group(self.client.config, workers).attrs.get("offsets", []):
                    if row["lag"] is not None:  # the broker says nothing before the group read any
                        lag.add_metric([str(row["partition"])], float(max(row["lag"], 0)))
            else:
                for _, row in partitions(self.client.config, workers).iterrows():
                    lag.add_metric([str(row["partition"])], float(row["lag"]))
        except YadtqError:
            pass  # Kafka did not answer in time: no lag samples this scrape
        yield lag


def serve(client: Client, port: int, duration: float | None = None) -> None:
    """Expose the metrics on 127.0.0.1:``port`` until Ctrl-C (or ``duration`` seconds)."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(QueueCollector(client))  # type: ignore[arg-type]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    print(f"metrics at http://127.0.0.1:{port}/metrics (Ctrl-C to stop)", flush=True)
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.shutdown()
        thread.join(5)
