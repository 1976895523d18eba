"""Experiment descriptions: JSON round trip, reproducible schedules, and one-sentence refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yadtq.core.errors import ConfigError
from yadtq.lab import Experiment, Fault, SpecError


def full() -> Experiment:
    return Experiment(
        name="full",
        arrival="bursts",
        arrival_rate=4.0,
        burst_size=3,
        service="list",
        service_seconds=0.1,
        service_times=(0.05, 0.2),
        workers=3,
        partitions=6,
        tasks=30,
        delivery="at_least_once",
        faults=(Fault(at=1.0, action="kill", worker=2), Fault(at=2.0, action="pause_for", worker=0, seconds=1.5)),
        seed=7,
        heartbeat_interval=0.5,
        heartbeat_timeout=2.0,
    )


def test_json_round_trip(tmp_path: Path) -> None:
    spec = full()
    assert Experiment.from_json(spec.to_json()) == spec
    assert Experiment.load(spec.save(tmp_path / "spec.json")) == spec
    assert json.loads(spec.to_json())["faults"][1] == {"at": 2.0, "action": "pause_for", "worker": 0, "seconds": 1.5}


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a, b = Experiment(seed=3, tasks=500).schedule(), Experiment(seed=3, tasks=500).schedule()
    assert np.array_equal(a.arrivals, b.arrivals) and np.array_equal(a.services, b.services)
    c = Experiment(seed=4, tasks=500).schedule()
    assert not np.array_equal(a.arrivals, c.arrivals)


def test_changing_the_rate_keeps_the_service_times() -> None:
    slow, fast = Experiment(arrival_rate=5, tasks=100).schedule(), Experiment(arrival_rate=15, tasks=100).schedule()
    assert np.array_equal(slow.services, fast.services)
    assert not np.array_equal(slow.arrivals, fast.arrivals)


def test_schedules_have_the_asked_shape() -> None:
    poisson = Experiment(arrival_rate=20, service_seconds=0.05, tasks=20_000).schedule()
    assert len(poisson) == 20_000
    assert np.all(np.diff(poisson.arrivals) >= 0)
    assert np.mean(np.diff(poisson.arrivals)) == pytest.approx(1 / 20, rel=0.03)
    assert np.mean(poisson.services) == pytest.approx(0.05, rel=0.03)

    timed = Experiment(arrival_rate=10, duration=30.0, tasks=None).schedule()
    assert timed.arrivals.max() < 30 and abs(len(timed) - 300) < 4 * np.sqrt(300)

    constant = Experiment(arrival="constant", arrival_rate=4, service="constant", tasks=5).schedule()
    assert constant.arrivals.tolist() == [0, 0.25, 0.5, 0.75, 1.0] and set(constant.services) == {0.1}

    bursts = full().schedule()
    assert bursts.arrivals[:6].tolist() == [0, 0, 0, 0.75, 0.75, 0.75]
    assert set(bursts.services) <= {0.05, 0.2}


def test_partitions_are_dealt_like_the_range_assignor() -> None:
    assert Experiment(workers=3, partitions=8).partition_counts() == [3, 3, 2]
    assert Experiment(workers=4, partitions=2).partition_counts() == [1, 1, 0, 0]


def test_shared_is_the_default_dispatch_and_every_process_serves_every_task() -> None:
    spec = Experiment(arrival_rate=20, service_seconds=0.1, workers=4, concurrency=2, partitions=2, tasks=100)
    assert spec.dispatch == "shared" and json.loads(spec.to_json())["dispatch"] == "shared"
    # processes and slots as partitioned: workers processes, concurrency slots each
    assert (spec.processes, spec.slots, spec.servers) == (4, 2, 8)
    partitioned = spec.replace(dispatch="partitioned")
    assert (partitioned.processes, partitioned.slots, partitioned.servers) == (4, 2, 8)
    pooled = spec.replace(dispatch="pooled")
    assert (pooled.processes, pooled.slots, pooled.servers) == (1, 8, 8)
    # shared: one queue, so the load is λ·E[S]/c whatever the partitions (2 of them on 4 workers)
    assert spec.busiest_share == pytest.approx(1 / 4)
    assert spec.busiest_load == pytest.approx(20 * 0.1 / 8) == pooled.busiest_load
    # partitioned: the two workers that own a partition carry half the tasks each
    assert partitioned.busiest_share == pytest.approx(1 / 2)
    assert partitioned.busiest_load == pytest.approx(20 * 0.5 * 0.1 / 2)


def test_the_overload_rule_counts_every_process_of_a_shared_queue() -> None:
    # 4 workers, 2 partitions, ρ = 0.75 shared; partitioned, two workers carry it all: ρ = 1.5
    data = {"arrival_rate": 30, "service_seconds": 0.1, "workers": 4, "partitions": 2, "tasks": 100_000}
    assert Experiment.from_dict(data).busiest_load == pytest.approx(0.75)
    with pytest.raises(SpecError, match=r"loaded at 1\.50"):
        Experiment.from_dict({**data, "dispatch": "partitioned"})


def test_a_short_overload_is_allowed() -> None:
    spec = Experiment(arrival_rate=40, service_seconds=0.1, workers=2, tasks=100)
    assert spec.busiest_load == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        ({"name": "../x"}, "name must be 1-64 letters, digits, '-', '_' or '.', not '../x'."),
        ({"arrival_rate": -1}, "arrival_rate must be a positive number, not -1."),
        ({"arrival_rate": "fast"}, "arrival_rate must be a positive number, not 'fast'."),
        ({"speed": 3}, "unknown experiment field(s): speed; known: "),
        ({"arrival": "uniform"}, "arrival must be one of poisson, constant, bursts, not 'uniform'."),
        ({"service": "pareto"}, "service must be one of constant, exponential, list, sequence, not 'pareto'."),
        ({"delivery": "exactly_once"}, "delivery must be one of effectively_once, at_least_once, at_most_once"),
        ({"service": "list", "service_times": []}, "service 'list' needs a non-empty service_times list."),
        ({"service_times": [0.1]}, "service_times is only used with service 'list' or 'sequence'."),
        ({"service": "list", "service_times": [0.1, -2]}, "every service time must be in (0, 3600] seconds."),
        ({"workers": 0}, "workers must be a whole number >= 1, not 0."),
        ({"tasks": 10, "duration": 5}, "give exactly one of tasks (a count) and duration (seconds of arrivals)."),
        ({"tasks": None}, "give exactly one of tasks (a count) and duration (seconds of arrivals)."),
        ({"heartbeat_timeout": 0.5}, "heartbeat_timeout must be longer than heartbeat_interval."),
        ({"faults": [{"at": 1, "action": "explode"}]}, "fault action must be one of kill, term, pause, resume"),
        ({"faults": [{"at": 1, "action": "kill", "worker": 5}]}, "fault worker must be an index from 0 to 1, not 5."),
        ({"faults": [{"at": 1, "action": "pause_for"}]}, "fault seconds (for pause_for) must be a positive number"),
        ({"faults": [{"at": 1, "action": "kill", "when": 2}]}, "unknown fault field(s): when;"),
        ({"faults": "kill"}, "faults must be a list of {at, action, worker, seconds} objects."),
        (
            {"arrival_rate": 30, "service_seconds": 0.1, "workers": 2, "tasks": 100_000},
            "the busiest worker would be loaded at 1.50 (>= 1), leaving a backlog that takes about",
        ),
    ],
)
def test_bad_specs_are_refused_with_one_sentence(data: dict[str, object], sentence: str) -> None:
    with pytest.raises(SpecError) as caught:
        Experiment.from_dict(data)
    message = str(caught.value)
    assert message.startswith(sentence)
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert isinstance(caught.value, ConfigError)  # so the CLI maps it to exit code 2


def test_files_that_are_not_specs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        Experiment.load(tmp_path / "bad.json")
    with pytest.raises(SpecError, match="cannot read the experiment file"):
        Experiment.load(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="JSON object"):
        Experiment.from_json("[1, 2]")


def test_a_sequence_of_service_times_and_a_replacement_worker() -> None:
    spec = Experiment(
        service="sequence",
        service_times=[5, 0.1, 0.1],
        arrival="constant",
        workers=1,
        tasks=7,
        faults=[{"at": 1, "action": "kill"}, {"at": 1, "action": "start"}, {"at": 2, "action": "pause", "worker": 1}],
    )
    assert spec.schedule().services.tolist() == [5, 0.1, 0.1, 5, 0.1, 0.1, 5]
    assert spec.service_mean == pytest.approx(5.2 / 3)
    with pytest.raises(SpecError, match="fault worker must be an index from 0 to 0"):
        spec.replace(faults=[{"at": 2, "action": "kill", "worker": 1}])
    with pytest.raises(SpecError, match="takes no worker index"):
        spec.replace(faults=[{"at": 2, "action": "start", "worker": 1}])
    with pytest.raises(SpecError, match="dispatch must be one of shared, partitioned, pooled"):
        spec.replace(dispatch="random")
