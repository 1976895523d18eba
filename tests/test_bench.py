"""The benchmarks keep working: a small run of each, against the real services (figures are judged by
the benchmarks themselves, see docs/performance.md, never by a timed test)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from compare import table
from throughput import measure

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.mark.parametrize("settings", [{}, {"wait": True}, {"sleep": 0.01, "concurrency": 2}], ids=str)
def test_a_small_throughput_run_verifies_every_result(base_config, settings) -> None:
    summary = measure(tasks=300, workers=2, **settings)
    assert summary["verified"]
    assert summary["enqueue_per_s"] > 0 and summary["drain_per_s"] > 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert summary["worker_rss_mb"] > 10, "the worker's memory was not measured"


def test_the_comparison_table_gives_ratios_to_yadtq() -> None:
    medians = {
        "yadtq": {"enqueue_per_s": 3000, "drain_per_s": 2000, "p50_ms": 2, "p95_ms": 3, "p99_ms": 4},
        "huey": {"enqueue_per_s": 6000, "drain_per_s": 1000, "p50_ms": 1.7, "p95_ms": 2, "p99_ms": 2.1},
    }
    lines = table(medians).splitlines()
    assert lines[2].startswith("| yadtq |") and "| 1.00 | 1.00 |" in lines[2]
    assert lines[3].startswith("| huey |") and lines[3].endswith("| 2.00 | 0.50 |")


def test_the_cpu_budget_accounts_for_every_process(base_config) -> None:
    import cpu_budget

    # CPU comes from /proc in 10 ms ticks: enough tasks that the broker's share is several ticks
    result = cpu_budget.measure(tasks=1000, workers=1)
    spent = result["cpu_us_per_task"]
    assert set(spent) == {"kafka broker", "redis", "workers", "executors", "client"}
    assert spent["workers"] > 0 and spent["client"] > 0 and spent["kafka broker"] > 0, spent
    assert result["cpu_bound_drain_per_s"] > 0
    alone = cpu_budget.measure_submit(tasks=300)["cpu_us_per_submit"]
    assert set(alone) == {"kafka broker", "redis", "client"} and alone["client"] > 0, alone


def test_kafka_alone_measures_both_clients_and_every_process(config) -> None:
    import kafka_alone

    assert kafka_alone.latency(config, n=50, warm_up=10)["p50"] > 0
    java = kafka_alone.java_latency(config, n=50)
    assert "skipped" not in java, java  # CI starts the broker from its jars, so the Java client is there
    assert 0 < java["p50"] <= java["p99"]
    result = kafka_alone.cpu(config, messages=4000)  # the broker's share several 10 ms ticks, never 0
    spent = result["cpu_us_per_message"]
    assert set(spent) == {"kafka broker", "producer", "consumers"}
    assert all(us > 0 for us in spent.values()), spent
