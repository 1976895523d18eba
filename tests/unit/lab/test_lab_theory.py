"""Queueing formulas against textbook values and independent computations."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from yadtq.lab import Experiment, mgc, mmc, partitioned, predict
from yadtq.lab.theory import erlang_c, label, labelled_predictions


def erlang_c_by_the_book(servers: int, offered: Fraction) -> Fraction:
    """P(wait) from the textbook sum, in exact rational arithmetic (no overflow, no rounding)."""
    top = offered**servers / math.factorial(servers) * Fraction(servers) / (servers - offered)
    return top / (sum(offered**k / math.factorial(k) for k in range(servers)) + top)


def test_mm1_at_half_load_matches_the_textbook() -> None:
    p = mmc(arrival_rate=0.5, service_rate=1.0, servers=1)
    assert p.utilisation == pytest.approx(0.5)
    assert p.p_wait == pytest.approx(0.5)
    assert p.mean_wait == pytest.approx(1.0)  # ρ / (μ − λ)
    assert p.mean_response == pytest.approx(2.0)  # 1 / (μ − λ)
    assert p.mean_queue_length == pytest.approx(0.5)  # ρ² / (1 − ρ)
    assert p.mean_in_system == pytest.approx(1.0)  # ρ / (1 − ρ)


def test_mm2_at_offered_load_one() -> None:
    p = mmc(arrival_rate=1.0, service_rate=1.0, servers=2)
    assert p.p_wait == pytest.approx(1 / 3)
    assert p.mean_wait == pytest.approx(1 / 3)  # C / (cμ − λ)
    assert p.mean_in_system == pytest.approx(4 / 3)


@pytest.mark.parametrize(("servers", "offered"), [(3, Fraction(5, 2)), (10, Fraction(8)), (200, Fraction(190))])
def test_erlang_c_matches_the_textbook_sum(servers: int, offered: Fraction) -> None:
    expected = float(erlang_c_by_the_book(servers, offered))
    assert erlang_c(servers, float(offered)) == pytest.approx(expected, rel=1e-9)
    assert mmc(float(offered), 1.0, servers).p_wait == pytest.approx(expected, rel=1e-9)


def test_erlang_c_stays_finite_for_a_thousand_servers() -> None:
    p = mmc(arrival_rate=990.0, service_rate=1.0, servers=1000)
    assert 0 < p.p_wait < 1 and math.isfinite(p.mean_wait)


def test_unstable_systems_are_refused() -> None:
    with pytest.raises(ValueError, match="unstable"):
        mmc(arrival_rate=2.0, service_rate=1.0, servers=2)
    with pytest.raises(ValueError, match="unstable"):
        partitioned(3.0, 1.0, 1.0, [0.5, 0.5])


def test_md1_gets_half_the_mm1_wait_which_is_pollaczek_khinchine() -> None:
    rho = 0.8
    p = mgc(arrival_rate=rho, service_rate=1.0, servers=1, scv=0.0)
    assert p.mean_wait == pytest.approx(rho / (2 * (1 - rho)))
    assert p.model == "M/D/c (approx.)"


def test_partitioned_is_independent_mm1_queues() -> None:
    whole = partitioned(arrival_rate=1.0, service_rate=1.0, scv=1.0, shares=[0.5, 0.5])
    half = mmc(arrival_rate=0.5, service_rate=1.0, servers=1)
    assert whole.mean_wait == pytest.approx(half.mean_wait)
    assert whole.mean_in_system == pytest.approx(2 * half.mean_in_system)
    # at the same load, a shared queue waits less than split ones
    assert mmc(1.0, 1.0, 2).mean_wait < whole.mean_wait


def test_uneven_partitions_weigh_the_busier_worker() -> None:
    even = partitioned(1.2, 1.0, 1.0, [0.5, 0.5])
    uneven = partitioned(1.2, 1.0, 1.0, [0.625, 0.375])  # 8 partitions on 2 workers vs 5 + 3
    assert uneven.mean_wait > even.mean_wait


def test_predict_picks_the_model() -> None:
    base = Experiment(arrival_rate=10, service_seconds=0.1, workers=2, partitions=8, tasks=100, dispatch="partitioned")
    assert predict(base).model == "partitioned M/M/1"
    assert predict(base, "pooled").model == "M/M/c"
    assert predict(base.replace(service="constant"), "pooled").model == "M/D/c (approx.)"
    assert predict(base.replace(service="constant")).model == "partitioned M/G/1"
    assert predict(base, "pooled").mean_wait == pytest.approx(mmc(10, 10, 2).mean_wait)
    with pytest.raises(ValueError, match="Poisson"):
        predict(base.replace(arrival="constant"))
    # more workers than partitions: the extra workers never get a task, but pooled slots all serve
    many = base.replace(workers=4, partitions=2)
    assert predict(many, "pooled").servers == 4
    assert predict(many).mean_wait == pytest.approx(mmc(5, 10, 1).mean_wait)
    # a spec's own dispatch is the default model; pooled is one process with every slot
    pooled = base.replace(dispatch="pooled")
    assert pooled.processes == 1 and pooled.slots == 2 and pooled.partition_counts() == [8]
    assert predict(pooled).model == "M/M/c" and predict(pooled, "partitioned").model == "partitioned M/M/1"
    assert pooled.busiest_load == pytest.approx(0.5)


def test_shared_dispatch_is_the_pooled_formula_and_the_default() -> None:
    spec = Experiment(arrival_rate=32, service_seconds=0.1, workers=4, partitions=8, tasks=100)
    assert spec.dispatch == "shared"
    shared = predict(spec)
    assert shared == predict(spec, "shared") == predict(spec, "pooled") == mmc(32, 10, 4)
    assert shared.model == "M/M/c" and shared.servers == 4 and shared.utilisation == pytest.approx(0.8)
    # against an M/M/1 queue per worker at ρ = 0.8: wait 0.4 s
    assert predict(spec, "partitioned").mean_wait == pytest.approx(0.4)
    assert shared.mean_wait == pytest.approx(0.0745, abs=1e-4) and shared.mean_wait < 0.2 * 0.4
    # other service times: the same approximation as pooled, over all workers × concurrency slots
    constant = spec.replace(service="constant", concurrency=2)
    assert predict(constant) == predict(constant, "pooled") == mgc(32, 10, 8, 0.0)
    with pytest.raises(ValueError, match="dispatch must be 'shared', 'partitioned' or 'pooled'"):
        predict(spec, "random")


def test_labels_name_the_dispatch_and_plots_get_each_formula_once() -> None:
    spec = Experiment(arrival_rate=10, service_seconds=0.1, workers=2, tasks=100)
    assert label("shared", predict(spec)) == "shared: M/M/c"
    assert label("partitioned", predict(spec, "partitioned")) == "partitioned: M/M/1 per worker"
    assert label("pooled", predict(spec.replace(service="constant"), "pooled")) == "pooled: M/D/c (approx.)"
    # the spec's own first; pooled is the same formula as shared, so it is left out
    assert [p.model for p in labelled_predictions(spec)] == ["shared: M/M/c", "partitioned: M/M/1 per worker"]
    own = labelled_predictions(spec.replace(dispatch="partitioned"))
    assert [p.model for p in own] == ["partitioned: M/M/1 per worker", "shared: M/M/c"]
    assert labelled_predictions(spec.replace(arrival="constant")) == []


def test_partitioned_workers_with_several_slots_are_mmc_queues_each() -> None:
    spec = Experiment(
        arrival_rate=10, service_seconds=0.1, workers=2, concurrency=2, partitions=8, tasks=100, dispatch="partitioned"
    )
    p = predict(spec)
    assert p.model == "partitioned M/M/2" and p.servers == 4
    assert p.mean_wait == pytest.approx(mmc(5, 10, 2).mean_wait)  # each worker: half the traffic, 2 slots
    assert predict(spec, "pooled").mean_wait == pytest.approx(mmc(10, 10, 4).mean_wait)
    assert predict(spec, "pooled").mean_wait < p.mean_wait  # pooling beats partitioning
