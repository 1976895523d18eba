"""The lab against the real Kafka and Redis: a short measured run, its audit, and a fault run.

The figures are compared with a *replay* of the same run (the same arrivals, measured service
times and worker of each task, through the ideal FCFS queue plus the measured per-task overhead):
that cancels the luck of the draw, which for a 30-second run is about 15% on the mean response
alone (measured by simulating the same spec under 40 seeds), so a comparison with the formulas
themselves could only be loose or flaky. The formulas are checked against long simulations in
tests/unit/lab/test_lab_simulate.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient

from tests.conftest import cli
from yadtq.core.config import Config
from yadtq.lab import Experiment, Fault, Result, predict
from yadtq.lab.run import run

pytestmark = [pytest.mark.services, pytest.mark.slow]


def assert_cleaned_up(base_config: Config, namespace: str) -> None:
    client = redis.Redis.from_url(base_config.redis_url)
    assert list(client.scan_iter(match=f"{namespace}:*", count=1000)) == []
    admin = KafkaAdminClient(**base_config.kafka_options())
    try:
        assert not [t for t in admin.list_topics() if t.startswith(f"{namespace}.")]
    finally:
        admin.close()


@pytest.mark.timeout(150)
def test_a_measured_run_matches_its_replay_and_littles_law(base_config: Config) -> None:
    # the default dispatch: shared (a share group), whose formula is M/M/c
    spec = Experiment(name="mm2", arrival_rate=10, service_seconds=0.1, workers=2, partitions=8, tasks=300, seed=3)
    result = run(spec, config=base_config, progress=False)
    s = result.summary
    theory, partitioned = predict(spec), predict(spec, "partitioned")
    print(
        f"measured response {s['response_mean']:.4f} s, replay {s['replay_response_mean']:.4f}, "
        f"ideal replay {s['replay_ideal_response_mean']:.4f}, {spec.dispatch} theory ({theory.model}) "
        f"{theory.mean_response:.4f}, partitioned {partitioned.mean_response:.4f}; "
        f"overhead {s['overhead_per_task'] * 1000:.1f} ms/task; "
        f"Little: L sampled {s['sampled_in_system']:.3f} ({s['littles_samples']} samples), "
        f"λ·W {s['littles_lambda_w']:.3f}, {s['littles_error']:.2%} apart; "
        f"lateness max {s['lateness_max'] * 1000:.0f} ms"
    )
    assert s["audit_tasks"] == 300
    assert s["audit_lost"] == 0 and s["audit_executed_more_than_once"] == 0 and s["audit_completed_once"] == 300
    assert (result.tasks["executions"] == 1).all() and (result.tasks["attempts"] == 1).all()
    assert set(result.tasks["worker"]) == {"worker-1", "worker-2"}
    # Little's law: L counted every 25 ms during the run (tasks scheduled minus the probe's set of
    # tasks gone), against λ·W from the tasks' records
    assert result.samples is not None and s["littles_samples"] > 500
    assert s["littles_error"] < 0.05
    assert s["lateness_p99"] < 0.1, "the load generator fell behind; the figures would not be open-loop"
    assert 0 < s["overhead_per_task"] < 0.05
    assert s["response_mean"] == pytest.approx(s["replay_response_mean"], rel=0.15)
    # the sleeps really ran: measured service is the scheduled service plus a little
    assert s["service_mean"] == pytest.approx(float(spec.schedule().services.mean()), abs=0.03)
    assert_cleaned_up(base_config, s["namespace"])


@pytest.mark.timeout(150)
@pytest.mark.parametrize("dispatch", ["shared", "partitioned"])
def test_a_killed_worker_loses_nothing_and_the_probe_counts_the_rerun(base_config: Config, dispatch: str) -> None:
    # 16 tasks at once on 2 workers, worker 0 killed in the middle of its second task. Partitioned
    # (one partition each): it has at least two unless it drew fewer than 2 of 16 (p = 17/65536).
    # Shared: each worker takes the next task whenever its slot is free, so it is on its second.
    spec = Experiment(
        name="kill",
        arrival="bursts",
        burst_size=16,
        arrival_rate=2,
        service="constant",
        service_seconds=0.5,
        workers=2,
        partitions=2,
        tasks=16,
        dispatch=dispatch,
        faults=(Fault(at=0.75, action="kill", worker=0),),
    )
    result = run(spec, config=base_config, progress=False)
    s, tasks = result.summary, result.tasks
    assert [f["action"] for f in s["faults_done"]] == ["kill"]
    assert s["audit_lost"] == 0 and s["completed"] == 16
    assert (tasks["executions"] >= 1).all()
    assert (tasks["executions"] <= tasks["attempts"]).all()  # every execution the probe saw was a claimed attempt
    rerun = tasks[tasks["executions"] > 1]
    assert len(rerun) >= 1 and s["audit_executed_more_than_once"] == len(rerun)
    assert (rerun["worker"] == "worker-2").all()  # finished by the survivor
    assert_cleaned_up(base_config, s["namespace"])


@pytest.mark.timeout(150)
def test_lab_run_from_the_terminal_writes_results_and_plots(base_config: Config, tmp_path: Path) -> None:
    spec = Experiment(name="cli", arrival_rate=10, service_seconds=0.05, workers=2, tasks=20).save(tmp_path / "s.json")
    out = tmp_path / "out"
    proc = cli(base_config, "lab", "run", str(spec), "-o", str(out), "--no-progress", timeout=140)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20/20 tasks" in proc.stdout and "audit: lost 0  duplicated 0  restarted 0  completed once 20" in proc.stdout
    result = Result.load(out)
    assert len(result.tasks) == 20 and result.experiment == Experiment.load(spec)
    assert (out / "gantt.png").stat().st_size > 0 and (out / "response.png").stat().st_size > 0
    assert (out / "timeline.png").stat().st_size > 0 and (out / "beats.csv").stat().st_size > 0
    assert_cleaned_up(base_config, result.summary["namespace"])
