"""Queueing formulas against textbook values and independent computations."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from yadtq.lab import Experiment, mgc, mmc, partitioned, predict
from yadtq.lab.theory import erlang_c, label, labelled_predictions, lee_longton, mdc


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


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8, 0.95, 0.99])
@pytest.mark.parametrize("service_seconds", [1.0, 0.1])
def test_md1_is_pollaczek_khinchine(rho: float, service_seconds: float) -> None:
    service_rate = 1 / service_seconds
    p = mgc(arrival_rate=rho * service_rate, service_rate=service_rate, servers=1, scv=0.0)
    assert p.model == "M/D/c" and p == mdc(rho * service_rate, service_rate, 1)
    assert p.mean_wait == pytest.approx(rho * service_seconds / (2 * (1 - rho)), rel=1e-12)
    assert p.p_wait == pytest.approx(rho, rel=1e-12)
    assert p.mean_in_system == pytest.approx(rho + rho**2 / (2 * (1 - rho)), rel=1e-12)


def crommelins_chain(servers: int, offered: float, states: int = 600, steps: int = 3000) -> tuple[float, float]:
    """Mean wait (in units of D) and P(wait) of M/D/c by iterating its chain
    ``N(t + D) = max(N(t) − c, 0) + Poisson(a)`` from an empty system until it settles: a method
    with no roots, all of whose terms are positive (no cancellation)."""
    k = np.arange(states)
    arrivals = np.exp(-offered + k * math.log(offered) - np.array([math.lgamma(i + 1) for i in k]))
    p = np.zeros(states)
    p[0] = 1.0
    for _ in range(steps):
        left = np.zeros(states)
        left[0] = p[: servers + 1].sum()
        left[1 : states - servers] = p[servers + 1 :]
        p = np.convolve(left, arrivals)[:states]
        p /= p.sum()
    queue = float(np.sum(np.clip(k - servers, 0, None) * p))
    return queue / offered, float(p[servers:].sum())  # Little: Wq = Lq / λ (D = 1)


@pytest.mark.parametrize(("servers", "rho"), [(2, 0.5), (3, 0.7), (4, 0.5), (8, 0.8), (16, 0.5), (50, 0.9)])
def test_mdc_solves_crommelins_chain(servers: int, rho: float) -> None:
    wait, p_wait = crommelins_chain(servers, rho * servers)
    exact = mdc(rho * servers, 1.0, servers)
    assert exact.model == "M/D/c" and exact.utilisation == pytest.approx(rho)
    assert exact.mean_wait == pytest.approx(wait, rel=1e-9)
    assert exact.p_wait == pytest.approx(p_wait, rel=1e-9)
    # in seconds: the same queue with 0.1 s tasks waits a tenth as long
    assert mdc(rho * servers * 10, 10.0, servers).mean_wait == pytest.approx(wait / 10, rel=1e-9)


def md_c_by_recursion(servers: int, rho: float, customers: int, seed: int) -> float:
    """The mean wait (D = 1) of ``customers`` tasks through an M/D/c FCFS queue, from empty.

    With equal service times and FCFS, customer ``n`` starts once it has arrived and customer
    ``n − c`` has left: ``S_n = max(A_n, S_{n−c} + 1)``. (The customers before ``n − c`` have left
    by then, and while ``n − c`` is still in service the ``c`` customers ``n − c … n − 1`` occupy
    every server.) Along each residue class of ``n`` mod ``c`` this is Lindley's recursion, whose
    solution is ``S_k = k + max_{j ≤ k} (A_j − j)``: a cumulative maximum."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / (rho * servers), customers - customers % servers))
    rows = arrivals.reshape(-1, servers)  # row k holds customers k·c … k·c + c − 1
    k = np.arange(len(rows))[:, None]
    starts = k + np.maximum.accumulate(rows - k, axis=0)
    return float((starts - rows).mean())


#: Replications of the recursion per (c, ρ), and tasks in each.
REPLICATIONS, CUSTOMERS = 40, 400_000


@pytest.mark.parametrize("rho", [0.5, 0.8])
@pytest.mark.parametrize("servers", [1, 2, 4, 8])
def test_mdc_matches_a_long_simulation(servers: int, rho: float) -> None:
    # 16 million tasks in 40 independent replications, each started empty (the start-up bias is
    # under 0.01 % of a replication); the replications' spread gives the standard error
    waits = np.array([md_c_by_recursion(servers, rho, CUSTOMERS, seed) for seed in range(REPLICATIONS)])
    simulated, error = waits.mean(), waits.std(ddof=1) / math.sqrt(REPLICATIONS)
    exact = mdc(rho * servers, 1.0, servers).mean_wait
    assert error < 0.005 * exact, "too few tasks for the tolerance to mean anything"
    assert simulated == pytest.approx(exact, rel=0.02)
    assert abs(simulated - exact) < 4 * error
    if servers > 1 and rho == 0.5:  # the approximation it replaces is off by 6-21 %: many errors
        assert lee_longton(rho * servers, 1.0, servers, 0.0).mean_wait < simulated - 10 * error


def test_mdc_stays_finite_for_a_thousand_servers_and_below_mmc() -> None:
    for servers, rho in ((1000, 0.99), (200, 0.95), (16, 0.8)):
        p = mdc(rho * servers, 1.0, servers)
        assert 0 < p.p_wait < 1 and 0 < p.mean_wait < mmc(rho * servers, 1.0, servers).mean_wait


def test_lee_longton_is_kept_for_other_service_times_and_is_low_for_constant_ones() -> None:
    # scv strictly between 0 and 1 (a list of service times): the approximation, named as one
    p = mgc(arrival_rate=2.0, service_rate=1.0, servers=4, scv=0.25)
    assert p.model == "M/G/c (approx.)" and p == lee_longton(2.0, 1.0, 4, 0.25)
    assert p.mean_wait == pytest.approx(0.625 * mmc(2.0, 1.0, 4).mean_wait)
    assert mgc(2.0, 1.0, 4, 1.0) == mmc(2.0, 1.0, 4)
    # the figure: M/D/4 at ρ = 0.5 is 0.0497 service times, not 0.0435
    assert mgc(2.0, 1.0, 4, 0.0).mean_wait == pytest.approx(0.049652, abs=1e-6)
    assert lee_longton(2.0, 1.0, 4, 0.0).mean_wait == pytest.approx(0.043478, abs=1e-6)


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
    assert predict(base.replace(service="constant"), "pooled").model == "M/D/c"
    assert predict(base.replace(service="constant"), "pooled") == mdc(10, 10, 2)
    assert predict(base.replace(service="constant")).model == "partitioned M/D/1"
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
    # constant service times: the same exact M/D/c as pooled, over all workers × concurrency slots
    constant = spec.replace(service="constant", concurrency=2)
    assert predict(constant) == predict(constant, "pooled") == mdc(32, 10, 8)
    # partitioned workers with constant tasks and 2 slots each: exact M/D/2 queues too
    assert predict(constant, "partitioned").model == "partitioned M/D/2"
    assert predict(constant, "partitioned").mean_wait == pytest.approx(mdc(8, 10, 2).mean_wait)
    with pytest.raises(ValueError, match="dispatch must be 'shared', 'partitioned' or 'pooled'"):
        predict(spec, "random")


def test_labels_name_the_dispatch_and_plots_get_each_formula_once() -> None:
    spec = Experiment(arrival_rate=10, service_seconds=0.1, workers=2, tasks=100)
    assert label("shared", predict(spec)) == "shared: M/M/c"
    assert label("partitioned", predict(spec, "partitioned")) == "partitioned: M/M/1 per worker"
    assert label("pooled", predict(spec.replace(service="constant"), "pooled")) == "pooled: M/D/c"
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
