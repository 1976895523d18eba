"""Queueing theory for the lab: what the formulas say a run should measure.

yadtq can dispatch tasks to its ``c`` slots in three ways (the spec's ``dispatch``), and they come
down to two models:

- **shared** (the default): ``workers`` processes in one Kafka share group (KIP-932). The broker
  hands the next record to whichever process asks with a free slot, so all ``c = workers ×
  concurrency`` slots serve one queue: the M/M/c queue and its Erlang C formula (:func:`mmc`), for
  constant service times the M/D/c queue, also exactly (:func:`mdc`, by Crommelin's method), and
  :func:`mgc` approximately for other service times.
- **pooled**: *one* worker process with ``concurrency = c`` owns every partition of a consumer group,
  and its slots take the next fetched message, whichever partition it came from. One queue, ``c``
  servers: the same formulas as shared, in one process.
- **partitioned** (``workers`` processes in a consumer group): a task's key sends it to a random
  partition, and only the process that owns that partition can run it. Random splitting of a
  Poisson stream gives Poisson streams, so each process is an independent M/G/1 queue (M/G/k with
  ``k`` slots), and the Pollaczek-Khinchine formula is *exact* for it, for any service-time
  distribution (:func:`partitioned`). A process can be idle while another has a queue, so waits
  are longer than M/M/c's at the same load: the lab shows by how much.

Every formula needs Poisson arrivals and a stable system (ρ < 1); otherwise it raises ValueError,
and :func:`yadtq.lab.simulate.simulate` is the tool to use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from yadtq.lab.spec import Experiment


@dataclass(frozen=True)
class Prediction:
    """Steady-state means of one queueing model (times in seconds)."""

    model: str
    arrival_rate: float
    service_rate: float
    servers: int
    #: Mean fraction of time a worker is busy.
    utilisation: float
    #: Probability that an arriving task has to wait.
    p_wait: float
    mean_wait: float
    mean_response: float
    mean_queue_length: float
    mean_in_system: float


def _stable(arrival_rate: float, service_rate: float, servers: int) -> float:
    if arrival_rate <= 0 or service_rate <= 0 or servers < 1:
        raise ValueError("arrival_rate and service_rate must be positive and servers at least 1")
    load = arrival_rate / (servers * service_rate)
    if load >= 1:
        raise ValueError(
            f"unstable: arrival_rate {arrival_rate:g} >= servers * service_rate = {servers * service_rate:g} "
            f"(utilisation {load:.3f}); the queue grows without bound and has no steady state"
        )
    return load


def erlang_c(servers: int, offered: float) -> float:
    """P(wait) in M/M/c with offered load ``a = λ/μ``, through the Erlang B recursion
    ``B_k = a·B_{k-1} / (k + a·B_{k-1})``: no factorials or powers, so it stays finite and accurate
    for hundreds of servers, where the textbook sum overflows."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho * (1 - b))


def mmc(arrival_rate: float, service_rate: float, servers: int) -> Prediction:
    """M/M/c: Poisson arrivals, exponential service, one shared FCFS queue."""
    rho = _stable(arrival_rate, service_rate, servers)
    p_wait = erlang_c(servers, arrival_rate / service_rate)
    wait = p_wait / (servers * service_rate - arrival_rate)
    return _prediction("M/M/c", arrival_rate, service_rate, servers, rho, p_wait, wait)


def mdc_roots(servers: int, offered: float) -> np.ndarray:
    """The ``c − 1`` roots other than ``z = 1`` of ``z^c = exp(a(z − 1))`` in the unit disk (``a = λD``,
    ``a < c``), on which the exact M/D/c solution rests (Crommelin 1932; Tijms, *A First Course in
    Stochastic Models*, 2003; Franx 2001).

    Taking a ``c``-th root, ``z^c = exp(a(z − 1))`` splits into the ``c`` equations
    ``z = ω_k·exp(a(z − 1)/c)`` with ``ω_k = exp(2πik/c)``. For each ``k`` the right-hand side maps the
    closed unit disk into itself with a derivative of modulus at most ``a/c = ρ < 1``, so it has
    exactly one root there (``z_0 = 1`` for ``k = 0``). A few fixed-point steps and then Newton's
    method find each ``z_k``, ``k = 1 … c − 1``, to machine precision."""
    if servers < 2:
        return np.empty(0, dtype=complex)
    omega = np.exp(2j * np.pi * np.arange(1, servers) / servers)
    step = offered / servers
    z = np.zeros(servers - 1, dtype=complex)
    for _ in range(20):  # a contraction by ρ per step: into Newton's basin
        z = omega * np.exp(step * (z - 1))
    for _ in range(100):
        image = omega * np.exp(step * (z - 1))
        residual = z - image
        z = z - residual / (1 - step * image)
        if np.max(np.abs(residual)) < 1e-15:
            break
    if np.max(np.abs(z - omega * np.exp(step * (z - 1)))) > 1e-12 or np.max(np.abs(z)) > 1 + 1e-12:
        raise ArithmeticError(f"the M/D/c roots did not converge for c = {servers}, a = {offered:g}")
    return z


def mdc(arrival_rate: float, service_rate: float, servers: int) -> Prediction:
    """M/D/c exactly: Poisson arrivals, constant service time ``D = 1/μ``, one FCFS queue for ``c``
    servers (shared or pooled dispatch with constant tasks).

    Every task in service at time ``t`` has left by ``t + D``, and every task waiting at ``t`` or
    arriving in ``(t, t + D]`` is still there, so the number in system obeys
    ``N(t + D) = max(N(t) − c, 0) + A``, with ``A`` Poisson of mean ``a = λD`` (Crommelin's chain). Its
    generating function is ``P(z) = Σ_{j<c} p_j (z^c − z^j) / (z^c·exp(a(1 − z)) − 1)``; the
    numerator vanishes at the roots :func:`mdc_roots` ``z_1 … z_{c−1}`` and at ``z = 1``, which with
    ``P(1) = 1`` gives

    - ``P(wait) = P(N ≥ c) = 1 − (c − a) / Π_k (1 − z_k)``,
    - ``L = P'(1) = Σ_k 1/(1 − z_k) − ((c − a)² − c) / (2(c − a))``, and ``Wq = L/λ − D``.

    With ``c = 1`` there are no roots and these are Pollaczek-Khinchine's ``P(wait) = ρ`` and
    ``Wq = ρD / (2(1 − ρ))``. Half the M/M/c wait (:func:`lee_longton` with scv 0) underestimates it
    for ``c > 1``: in units of ``D`` at ρ = 0.5, ``c = 4`` gives 0.0497 here and 0.0435 (−12 %) by
    halving, ``c = 8`` 0.0093 and 0.0074 (−21 %); at ρ = 0.8, −3.5 % and −5.9 %.

    In double precision the wait carries an absolute error of about ``1e-14·D`` (against an
    iteration of Crommelin's chain, whose terms are all positive: 1e-13 relative for the lab's
    loads), so a wait below about ``1e-12·D``, as hundreds of servers at a light load have, is
    rounding noise and should be read as zero."""
    rho = _stable(arrival_rate, service_rate, servers)
    offered = arrival_rate / service_rate
    roots = mdc_roots(servers, offered)
    gap = servers - offered
    in_system = float(np.sum(1 / (1 - roots)).real) - (gap**2 - servers) / (2 * gap)
    # Π (1 − z_k) is real and positive (the roots come in conjugate pairs, and a real one lies in
    # (−1, 0)); summed as logarithms it cannot overflow for a thousand servers
    p_wait = 1 - math.exp(math.log(gap) - float(np.sum(np.log(np.abs(1 - roots)))))
    wait = max(in_system / arrival_rate - 1 / service_rate, 0.0)
    return _prediction("M/D/c", arrival_rate, service_rate, servers, rho, p_wait, wait)


def lee_longton(arrival_rate: float, service_rate: float, servers: int, scv: float) -> Prediction:
    """The Lee-Longton approximation ``Wq ≈ (1 + scv)/2 · Wq(M/M/c)`` for M/G/c, scv being the squared
    coefficient of variation of the service time. Exact for ``c = 1`` (Pollaczek-Khinchine) and for
    exponential service (scv = 1). Against the exact M/D/c wait (scv = 0, :func:`mdc`) it is *low*
    for ``c > 1``, and more so for more servers and a lighter load: −5.7 %, −12 % and −21 % for
    c = 2, 4 and 8 at ρ = 0.5; −1.6 %, −3.5 % and −5.9 % at ρ = 0.8 (long simulations agree with
    :func:`mdc` to within 0.2 %). It is low for service times in between as well: with two equally
    likely service times on 4 servers, simulated, 9 % (scv 0.25) and 8 % (scv 0.64) at ρ = 0.5, 2-3 %
    at ρ = 0.8."""
    base = mmc(arrival_rate, service_rate, servers)
    wait = (1 + scv) / 2 * base.mean_wait
    return _prediction("M/G/c (approx.)", arrival_rate, service_rate, servers, base.utilisation, base.p_wait, wait)


def mgc(arrival_rate: float, service_rate: float, servers: int, scv: float) -> Prediction:
    """M/G/c, one queue for all servers (shared or pooled dispatch), scv being the squared coefficient
    of variation of the service time: exact for exponential service (scv = 1, :func:`mmc`) and for
    constant service (scv = 0, :func:`mdc`); otherwise the :func:`lee_longton` approximation, whose
    error for constant service is given there."""
    if scv == 1:
        return mmc(arrival_rate, service_rate, servers)
    if scv == 0:
        return mdc(arrival_rate, service_rate, servers)
    return lee_longton(arrival_rate, service_rate, servers, scv)


def partitioned(
    arrival_rate: float, service_rate: float, scv: float, shares: list[float], slots: int = 1
) -> Prediction:
    """Partitioned dispatch over several processes: worker ``i`` receives the fraction ``shares[i]`` of
    the tasks (its partitions over all partitions) and serves them alone with ``slots`` slots. With
    one slot it is an M/G/1 queue, whose mean wait is exact by Pollaczek-Khinchine,
    ``Wq = λ_i·E[S²] / (2(1 − ρ_i))``; with more, :func:`mgc` per worker (exact for exponential and
    constant service). Then weighted by traffic."""
    if abs(sum(shares) - 1) > 1e-9 or any(s < 0 for s in shares):
        raise ValueError("shares must be non-negative and sum to 1")
    busy = [s for s in shares if s > 0]
    mean_s = 1 / service_rate
    second_moment = mean_s**2 * (1 + scv)
    wait = p_wait = 0.0
    for share in busy:
        rate = arrival_rate * share
        if slots == 1:
            rho = _stable(rate, service_rate, 1)
            wait += share * rate * second_moment / (2 * (1 - rho))
            p_wait += share * rho  # M/G/1: an arrival waits exactly when the server is busy
        else:
            one = mgc(rate, service_rate, slots, scv)
            wait += share * one.mean_wait
            p_wait += share * one.p_wait
    servers = len(shares) * slots
    utilisation = arrival_rate * mean_s / servers
    kind = "M/M/" if scv == 1 else ("M/D/" if scv == 0 else "M/G/")
    model = f"partitioned {kind}{'1' if slots == 1 else slots}"
    return _prediction(model, arrival_rate, service_rate, servers, utilisation, p_wait, wait)


#: The dispatches whose formulas are the same M/M/c (M/D/c, M/G/c) model: one queue for every slot.
ONE_QUEUE = ("shared", "pooled")


def predict(experiment: Experiment, dispatch: str | None = None) -> Prediction:
    """The formula that fits ``experiment`` as it would run: its own ``dispatch`` by default, or
    another one for comparison. ``shared`` and ``pooled``: all ``workers × concurrency`` slots on one
    queue (M/M/c and M/D/c exactly, M/G/c approximately); ``partitioned``: ``workers`` processes,
    each with its own partitions (exact for any service time with one slot each)."""
    if experiment.arrival != "poisson":
        raise ValueError(f"the formulas assume Poisson arrivals, not {experiment.arrival}; simulate instead")
    dispatch = dispatch or experiment.dispatch
    if dispatch in ONE_QUEUE:
        return mgc(experiment.arrival_rate, experiment.service_rate, experiment.servers, experiment.service_scv)
    if dispatch == "partitioned":
        as_partitioned = experiment.replace(dispatch="partitioned") if experiment.dispatch != dispatch else experiment
        shares = [p / experiment.partitions for p in as_partitioned.partition_counts()]
        rate, mu, scv = experiment.arrival_rate, experiment.service_rate, experiment.service_scv
        return partitioned(rate, mu, scv, shares, experiment.concurrency)
    raise ValueError(f"dispatch must be 'shared', 'partitioned' or 'pooled', not {dispatch!r}")


def label(dispatch: str, prediction: Prediction) -> str:
    """A prediction named by the dispatch it was made for, for tables and legends:
    ``shared: M/M/c``, ``partitioned: M/M/1 per worker``, ``pooled: M/D/c``."""
    model = prediction.model.removeprefix("partitioned ")
    return f"{dispatch}: {model}{' per worker' if dispatch == 'partitioned' else ''}"


def labelled_predictions(experiment: Experiment) -> list[Prediction]:
    """The formula of the spec's own dispatch, then those of the other dispatches that differ from
    it (shared and pooled share one), each with its :func:`label` as ``model``: what a plot of one
    run compares it with. Dispatches without a formula (not Poisson, unstable) are left out."""
    from yadtq.lab.spec import DISPATCHES

    out: list[Prediction] = []
    for dispatch in sorted(DISPATCHES, key=lambda d: d != experiment.dispatch):
        try:
            p = predict(experiment, dispatch)
        except ValueError:
            continue
        if all(p.mean_wait != q.mean_wait or p.servers != q.servers for q in out):
            out.append(replace(p, model=label(dispatch, p)))
    return out


def predict_sampled(experiment: Experiment, dispatch: str | None = None) -> Prediction:
    """:func:`predict` fed with the arrival rate and mean service time that this experiment's
    schedule (its seed) really has, instead of the nominal ones.

    A finite run draws its own sample: over a 30-second run the sample mean of exponential service
    times alone is a few per cent off, and the response time follows it. Comparing a run with the
    formula at the *sampled* parameters removes that luck of the draw (for the pooled test spec,
    the spread of simulation over formula across seeds drops from 3 % to under 1 %), so what is left
    is the queue's own behaviour. The sampled figures come from the spec, not from the run."""
    schedule = experiment.schedule()
    span = float(schedule.arrivals[-1]) if len(schedule) else 0.0
    if span <= 0:
        raise ValueError("the schedule needs arrivals spread over time to estimate their rate")
    changes: dict[str, float] = {"arrival_rate": len(schedule) / span}
    if experiment.service in ("constant", "exponential"):  # a list's mean is fixed by the list itself
        changes["service_seconds"] = float(schedule.services.mean())
    return predict(experiment.replace(**changes), dispatch)


def _prediction(
    model: str, arrival_rate: float, service_rate: float, servers: int, rho: float, p_wait: float, wait: float
) -> Prediction:
    response = wait + 1 / service_rate
    return Prediction(
        model=model,
        arrival_rate=arrival_rate,
        service_rate=service_rate,
        servers=servers,
        utilisation=rho,
        p_wait=p_wait,
        mean_wait=wait,
        mean_response=response,
        mean_queue_length=arrival_rate * wait,
        mean_in_system=arrival_rate * response,
    )
