"""The discrete-event model against the formulas, and the Result it returns (Little's law: test_lab_littles_law.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from yadtq.lab import Experiment, Result, predict
from yadtq.lab.plots import gantt, response_distribution, sweep_plot
from yadtq.lab.result import COLUMNS
from yadtq.lab.simulate import replay, simulate
from yadtq.lab.theory import lee_longton, predict_sampled

LONG = Experiment(arrival_rate=2.1, service_seconds=1.0, workers=3, partitions=3, tasks=300_000, seed=11)


def test_pooled_simulation_matches_erlang_c_on_a_long_run() -> None:
    result = simulate(LONG, dispatch="pooled")
    theory = predict(LONG, "pooled")
    assert theory.model == "M/M/c"
    assert result.summary["wait_mean"] == pytest.approx(theory.mean_wait, rel=0.05)
    assert result.summary["response_mean"] == pytest.approx(theory.mean_response, rel=0.05)
    assert result.summary["utilisation_mean"] == pytest.approx(theory.utilisation, rel=0.02)


def test_partitioned_simulation_matches_pollaczek_khinchine() -> None:
    # 3 + 3 + 2 partitions: uneven, deterministic
    spec = LONG.replace(partitions=8, service="constant", dispatch="partitioned")
    result = simulate(spec)
    theory = predict(spec)
    assert result.summary["wait_mean"] == pytest.approx(theory.mean_wait, rel=0.05)
    assert result.summary["response_mean"] == pytest.approx(theory.mean_response, rel=0.05)
    # the worker with 2 partitions of 8 carries a quarter of the load
    assert result.summary["utilisation"]["worker-3"] == pytest.approx(2.1 * 2 / 8, rel=0.03)


def test_constant_tasks_on_one_queue_match_the_exact_md_c_not_the_approximation() -> None:
    # M/D/4 at ρ = 0.5 (1 s tasks): the exact wait is 0.0497 s, half the M/M/4 wait 0.0435 s (−12 %)
    spec = Experiment(arrival_rate=2.0, service="constant", service_seconds=1.0, workers=4, tasks=200_000, seed=7)
    theory = predict_sampled(spec)
    assert theory.model == "M/D/c"
    s = simulate(spec).summary
    assert s["wait_mean"] == pytest.approx(theory.mean_wait, rel=0.05)
    approximation = lee_longton(theory.arrival_rate, theory.service_rate, 4, 0.0)
    assert s["wait_mean"] > 1.08 * approximation.mean_wait


def test_the_result_has_the_run_columns_and_round_trips(tmp_path: Path) -> None:
    spec = Experiment(arrival_rate=8, service_seconds=0.1, workers=2, tasks=400, seed=2)
    result = simulate(spec)
    assert list(result.tasks.columns) == COLUMNS
    assert len(result.tasks) == 400 and result.tasks["id"].is_unique
    assert (result.tasks["executions"] == 1).all() and result.summary["completed"] == 400
    assert result.tasks["worker"].nunique() == 2
    again = Result.load(result.save(tmp_path / "run"))
    pd.testing.assert_frame_equal(again.tasks, result.tasks, check_dtype=False)
    assert again.experiment == spec and again.source == "simulation"
    assert again.summary["response_mean"] == pytest.approx(result.summary["response_mean"])


def test_same_spec_same_simulation() -> None:
    spec = Experiment(arrival_rate=15, service_seconds=0.1, workers=2, tasks=2_000, seed=5)
    pd.testing.assert_frame_equal(simulate(spec).tasks, simulate(spec).tasks)


def test_plots_draw_what_they_say() -> None:
    plt.switch_backend("Agg")
    result = simulate(Experiment(arrival_rate=15, service_seconds=0.1, workers=3, tasks=300))
    ax = gantt(result)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker-1", "worker-2", "worker-3"]
    plt.close(ax.figure)
    ax = response_distribution(result, predictions=[predict(result.experiment)])
    assert len(ax.get_legend().get_texts()) == 2
    plt.close(ax.figure)
    frame = pd.DataFrame(
        {
            "utilisation": [0.3, 0.5],
            "simulated_response_mean": [0.12, 0.2],
            "theory_response_mean": [0.13, 0.2],
            "mmc_response_mean": [0.11, 0.13],
        }
    )
    top, bottom = sweep_plot(frame)
    assert len(top.get_lines()) == 3 and len(bottom.get_lines()) == 3  # 2 errors + the zero line
    plt.close(top.figure)


def test_slots_of_one_worker_share_its_queue_as_mmc_says() -> None:
    pooled = LONG.replace(dispatch="pooled", tasks=100_000)
    result = simulate(pooled)
    assert set(result.tasks["worker"]) == {"worker-1"}  # one process, three slots
    assert result.summary["wait_mean"] == pytest.approx(predict(pooled).mean_wait, rel=0.08)
    assert result.summary["utilisation_mean"] == pytest.approx(0.7, rel=0.03)
    two_each = LONG.replace(
        workers=2, concurrency=2, partitions=2, arrival_rate=2.4, tasks=100_000, dispatch="partitioned"
    )
    result = simulate(two_each)
    assert result.summary["wait_mean"] == pytest.approx(predict(two_each).mean_wait, rel=0.08)
    assert simulate(two_each, "pooled").summary["wait_mean"] < result.summary["wait_mean"]


#: Shared dispatch at c = 4, ρ = 0.8: 4 worker processes, one slot each, Poisson at 32/s, 0.1 s tasks.
SHARED = Experiment(arrival_rate=32.0, service_seconds=0.1, workers=4, partitions=8, tasks=200_000, seed=3)


def test_shared_simulation_matches_mmc_and_spreads_over_every_process() -> None:
    assert SHARED.dispatch == "shared"  # the default
    result = simulate(SHARED)
    s = result.summary
    theory = predict(SHARED)
    assert theory.model == "M/M/c" and theory.servers == 4 and theory.utilisation == pytest.approx(0.8)
    # against the formula fed with what the seed drew, the wait is within a few per cent (8 seeds:
    # 3.1 % at worst); against the nominal one, the luck of the draw adds up to about 7 %
    sampled = predict_sampled(SHARED)
    assert s["wait_mean"] == pytest.approx(sampled.mean_wait, rel=0.06)
    assert s["response_mean"] == pytest.approx(sampled.mean_response, rel=0.03)
    assert s["wait_mean"] == pytest.approx(theory.mean_wait, rel=0.1)
    # served by every process, each busy 80 % of the time: one queue, not one per worker
    assert set(result.tasks["worker"]) == {"worker-1", "worker-2", "worker-3", "worker-4"}
    for busy in s["utilisation"].values():
        assert busy == pytest.approx(0.8, rel=0.02)
    # the same tasks partitioned wait about five times longer (M/M/1 at ρ = 0.8 per worker)
    partitioned = simulate(SHARED.replace(tasks=50_000), "partitioned").summary
    assert partitioned["wait_mean"] > 3 * s["wait_mean"]


def test_shared_and_pooled_are_one_queue_in_several_processes_or_in_one() -> None:
    spec = SHARED.replace(workers=2, concurrency=2, tasks=5_000)
    shared, pooled = simulate(spec), simulate(spec, "pooled")
    pd.testing.assert_series_equal(shared.tasks["started"], pooled.tasks["started"])
    assert set(shared.tasks["worker"]) == {"worker-1", "worker-2"} and set(pooled.tasks["worker"]) == {"worker-1"}
    assert shared.extra["dispatch"] == "shared" and pooled.extra["dispatch"] == "pooled"
    with pytest.raises(ValueError, match="dispatch must be one of shared, partitioned, pooled"):
        simulate(spec, "random")


def test_a_shared_replay_is_one_queue_for_every_worker() -> None:
    # two tasks at once: worker w1 ran both, one after the other, while w2 sat idle
    spec = Experiment(arrival_rate=10, service_seconds=0.1, workers=2, tasks=2)
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "worker": ["w1", "w1", "w2"],
            "scheduled": [0.0, 0.0, 5.0],
            "started": [0.0, 1.0, 5.0],
            "finished": [1.0, 2.0, 6.0],
        }
    )
    result = Result.build(frame, spec, "run")
    shared = replay(result)
    assert shared.tasks["wait"].tolist() == [0.0, 0.0, 0.0]  # b goes to the idle worker
    assert sorted(shared.tasks["worker"].iloc[:2]) == ["w1", "w2"]
    partitioned = replay(Result.build(frame, spec.replace(dispatch="partitioned"), "run"))
    assert partitioned.tasks["wait"].tolist() == [0.0, 1.0, 0.0]  # b stays on its worker, behind a


def test_the_overhead_of_a_worker_with_slots_counts_from_the_first_free_slot() -> None:
    spec = Experiment(arrival_rate=10, service_seconds=0.1, workers=1, concurrency=2, tasks=3)
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "worker": ["w"] * 3,
            "scheduled": [0.0, 0.0, 0.0],
            "started": [0.01, 0.02, 1.03],  # c waits for a's slot, free at 1.01
            "finished": [1.01, 2.02, 2.03],
        }
    )
    result = Result.build(frame, spec, "run")
    from yadtq.lab.simulate import dispatch_overhead

    assert dispatch_overhead(result) == pytest.approx((0.01 + 0.02 + 0.02) / 3)
