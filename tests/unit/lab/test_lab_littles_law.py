"""Little's law as a check: ``L`` counted while a run goes on, against ``λ·W`` from the task table.

A count computed from the task table itself cannot disagree with ``λ·W`` of that table (both are
sums of the same ``finished − scheduled`` intervals); these tests show that the check now used can.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from yadtq.lab import Experiment, Result
from yadtq.lab import probe as lab_probe
from yadtq.lab.run import _Plan, _Sampler
from yadtq.lab.simulate import simulate

#: 2 workers, Poisson at 10/s, exponential 0.1 s tasks: the spec of tests/lab/test_lab_run.py, longer.
SPEC = Experiment(arrival_rate=10, service_seconds=0.1, workers=2, tasks=20_000, seed=1)


def counted(arrived: np.ndarray, departed: np.ndarray, at: np.ndarray) -> pd.DataFrame:
    """What the run's sampler reads at the times ``at``: tasks scheduled by then, minus tasks gone."""
    left = np.sort(departed[~np.isnan(departed)])
    came = np.searchsorted(np.sort(arrived), at, side="right")
    gone = np.searchsorted(left, at, side="right")
    return pd.DataFrame({"at": at, "arrived": came, "departed": gone, "in_system": came - gone})


@pytest.fixture(scope="module")
def run_and_samples() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A simulated run's task table, and the counts a sampler would have taken every 25 ms of it."""
    tasks = simulate(SPEC).tasks
    at = np.arange(0.0, float(tasks["scheduled"].max()), 0.025) + 0.0123  # off the arrivals' grid
    samples = counted(tasks["scheduled"].to_numpy(float), tasks["finished"].to_numpy(float), at)
    return tasks, samples


def test_consistent_times_pass(run_and_samples: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tasks, samples = run_and_samples
    s = Result.build(tasks, SPEC, "run", samples=samples).summary
    assert s["littles_samples"] > 70_000
    assert s["littles_error"] < 0.005
    assert s["sampled_in_system"] == pytest.approx(s["arrival_rate"] * s["response_mean"], rel=0.005)


@pytest.mark.parametrize(
    "noise",
    [
        "uniform",  # every task leaves 0-1 s after it was scheduled
        "uniform over the run",  # every finish time anywhere in the arrival period
        "a second late",  # every finish time recorded a second late
    ],
)
def test_finish_times_replaced_by_noise_fail(run_and_samples: tuple[pd.DataFrame, pd.DataFrame], noise: str) -> None:
    tasks, samples = run_and_samples
    rng = np.random.default_rng(7)
    scheduled = tasks["scheduled"].to_numpy(float)
    scrambled = tasks.copy()
    if noise == "uniform":
        scrambled["finished"] = scheduled + rng.uniform(0.0, 1.0, len(tasks))
    elif noise == "uniform over the run":
        scrambled["finished"] = rng.uniform(scheduled.min(), scheduled.max(), len(tasks))
    else:
        scrambled["finished"] += 1.0
    s = Result.build(scrambled, SPEC, "run", samples=samples).summary
    assert s["littles_error"] > 0.5
    # the table's own time average follows the noise: it is λ·W again, whatever the times say
    if noise != "uniform over the run":  # (there, responses are negative and the "average" meaningless)
        assert s["mean_in_system"] == pytest.approx(s["littles_lambda_w"], rel=0.002)


def test_tasks_that_never_finish_fail(run_and_samples: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tasks, _ = run_and_samples
    lost = tasks.copy()
    lost.loc[lost.index % 50 == 0, "finished"] = np.nan  # 2 % lost: still in the system at every count
    at = np.arange(0.0, float(tasks["scheduled"].max()), 0.025)
    samples = counted(lost["scheduled"].to_numpy(float), lost["finished"].to_numpy(float), at)
    s = Result.build(lost, SPEC, "run", samples=samples).summary
    assert s["completed"] == len(tasks) - 400
    assert s["littles_error"] > 1  # 400 tasks in the system for good, against λ·W ≈ 1.35


def test_without_samples_there_is_no_check() -> None:
    s = simulate(SPEC.replace(tasks=2_000)).summary
    assert np.isnan(s["littles_error"]) and np.isnan(s["sampled_in_system"]) and s["littles_samples"] == 0
    assert s["mean_in_system"] == pytest.approx(s["littles_lambda_w"], rel=0.02)  # a figure, not a check


def test_samples_are_averaged_over_the_time_each_holds() -> None:
    tasks = pd.DataFrame({"id": ["a", "b"], "worker": "w", "scheduled": [0.0, 10.0], "started": [0.0, 10.0]})
    tasks["finished"] = tasks["started"] + 1.0
    # 2 tasks in the system for 1 s, then 0 for 9 s: sampled unevenly, the time average is 0.2
    samples = pd.DataFrame({"at": [0.0, 0.25, 0.5, 0.75, 1.0], "in_system": [2, 2, 2, 2, 0]})
    s = Result.build(tasks, SPEC, "run", samples=samples).summary
    assert s["sampled_in_system"] == pytest.approx(0.2) and s["littles_samples"] == 5
    assert s["littles_lambda_w"] == pytest.approx(0.2) and s["littles_error"] == pytest.approx(0.0, abs=1e-12)


def test_samples_round_trip(tmp_path: Path, run_and_samples: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tasks, samples = run_and_samples
    result = Result.build(tasks.head(500), SPEC, "run", samples=samples.head(2000))
    again = Result.load(result.save(tmp_path / "run"))
    assert again.samples is not None
    pd.testing.assert_frame_equal(again.samples, result.samples, check_dtype=False)
    assert again.summary["littles_error"] == pytest.approx(result.summary["littles_error"])


class FakeRedis:
    """The probe's and the sampler's Redis: counters, one set, and a pipeline that applies at once."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sets: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def incr(self, key: str) -> int:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]

    def sadd(self, key: str, member: str) -> int:
        with self.lock:
            self.sets.setdefault(key, set()).add(member)
            return 1

    def scard(self, key: str) -> int:
        with self.lock:
            return len(self.sets.get(key, ()))

    def pipeline(self, transaction: bool = True) -> Any:
        return self

    def execute(self) -> list[Any]:
        return []


def test_the_probe_marks_measured_tasks_as_gone_and_the_sampler_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRedis()
    monkeypatch.setattr(lab_probe, "_connection", lambda: (fake, "ns"))
    lab_probe.work(0.0, f"{lab_probe.WARM_UP}1-0")  # a warm-up task: not part of the load
    assert fake.scard(lab_probe.left_key("ns")) == 0
    assert fake.counts[lab_probe.done_key("ns", f"{lab_probe.WARM_UP}1-0")] == 1

    # three tasks scheduled at 0.05 s, 0.10 s and 0.15 s; the first two end at about 0.2 s
    client = SimpleNamespace(backend=SimpleNamespace(redis=fake), config=SimpleNamespace(namespace="ns"))
    plan = _Plan(t0=time.time(), arrivals=[0.05, 0.10, 0.15], services=[0.0] * 3, tokens=["0", "1", "2"])
    sampler = _Sampler(client, plan, interval=0.01)
    time.sleep(0.2)
    lab_probe.work(0.0, "0")
    lab_probe.work(0.0, "1")
    lab_probe.work(0.0, "1")  # a second execution of a task leaves it gone once
    time.sleep(0.1)
    samples = sampler.close()
    assert list(samples.columns) == ["at", "arrived", "departed", "in_system"]
    assert len(samples) > 10 and samples["at"].is_monotonic_increasing
    early = samples[samples["at"] < 0.04]
    assert (early["in_system"] == 0).all()
    assert samples["in_system"].max() == 3 and samples["in_system"].iloc[-1] == 1
    assert samples["departed"].iloc[-1] == 2 and samples["arrived"].iloc[-1] == 3
