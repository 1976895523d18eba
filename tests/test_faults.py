"""The fault suite: workers SIGKILLed mid-run, Redis and Kafka restarted mid-run, services down.

Tests that stop a service do it to this session's private Kafka and Redis (the ``private_services``
fixture), never to the shared ones other programs on the machine are using.

Each run is audited from what Redis recorded (:mod:`yadtq.lab.audit`): every task must end ``success``
with the right result, none may be finished twice. The figures of the last run are written to
``build/fault-suite.json`` (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, live_workers, submit_until_accepted
from yadtq import Client, ServiceUnavailable
from yadtq.core.config import Config
from yadtq.lab.audit import Audit, audit
from yadtq.processes import services
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]
FIGURES = ROOT / "build" / "fault-suite.json"


@pytest.fixture
def figures() -> Iterator[Callable[[str, dict[str, object]], None]]:
    def record(name: str, values: dict[str, object]) -> None:
        FIGURES.parent.mkdir(exist_ok=True)
        data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        data[name] = {**values, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        FIGURES.write_text(json.dumps(data, indent=2))

    yield record


def submit_squares(client: Client, n: int, pause: float) -> dict[str, int]:
    """n tasks square_after(i, pause); returns task id -> expected result."""
    return {client.submit("square_after", i, pause).id: i * i for i in range(n)}


def settle(client: Client, expected: dict[str, int], timeout: float) -> Audit:
    """Audit until nothing is unfinished (tolerating a service that is still coming back)."""
    deadline = time.monotonic() + timeout
    report = Audit()
    while time.monotonic() < deadline:
        try:
            report = audit(client.backend, expected, expected.__getitem__)
        except ServiceUnavailable:
            time.sleep(0.5)
            continue
        if report.unfinished == 0:
            return report
        time.sleep(0.5)
    return report


def busy_worker(client: Client, pool: Pool) -> str | None:
    frame = client.workers()
    busy = frame[(frame["state"] == "busy") & frame["name"].isin(pool.alive())]
    return str(busy["name"].iloc[0]) if len(busy) else None


def test_1000_tasks_survive_three_sigkills_of_busy_workers(client: Client, pool: Pool, wait_for, figures) -> None:
    pool.start(3)
    wait_for(live_workers(client, 3), timeout=60, what="3 workers")
    # Submitting (~400/s) outpaces 3 workers on 20 ms tasks (~100/s): a backlog builds, and the
    # kills below land mid-run.
    expected = submit_squares(client, 1000, 0.02)
    killed = []
    for _ in range(3):
        victim = wait_for(lambda: busy_worker(client, pool), timeout=30, what="a busy worker")
        pool.kill(str(victim))
        killed.append(victim)
        pool.start(1)
        time.sleep(1.0)
    report = settle(client, expected, timeout=240)
    workers = client.workers()
    figures(
        "sigkill",
        {
            "tasks": report.tasks,
            "kills": len(killed),
            "replacements": len(killed),
            "succeeded": report.succeeded,
            "lost": report.unfinished,
            "duplicates": report.duplicates,
            "wrong": report.wrong,
            "attempts": report.attempts,
            "retried": report.retried,
        },
    )
    assert report.clean, report.problems
    assert report.succeeded == 1000
    assert workers["processed"].sum() == 1000, "a result was counted twice or lost"
    assert set(workers.set_index("name").loc[killed, "state"]) == {"dead"}


@pytest.mark.parametrize("service", ["redis", "kafka"])
def test_tasks_survive_a_service_restart_mid_run(
    service: str, private_services: Config, make_private: Callable[..., Config], tmp_path, wait_for, figures
) -> None:
    config = make_private()
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        restart_mid_run(service, private_services, client, pool, wait_for, figures)


def restart_mid_run(service: str, owned: Config, client: Client, pool: Pool, wait_for, figures) -> None:
    """SIGTERM one service 300 tasks into a run, bring it back 3 s later, and audit the run."""
    pool.start(3)
    wait_for(live_workers(client, 3), timeout=60, what="3 workers")
    expected = submit_squares(client, 300, 0.05)  # about 5 s of work for 3 workers
    done_before = audit(client.backend, expected).succeeded
    services.stop(owned, service)
    time.sleep(3)
    services.start(owned, service)
    report = settle(client, expected, timeout=240)
    figures(
        f"{service}_restart",
        {
            "tasks": report.tasks,
            "restarts": 1,
            "succeeded_before_restart": done_before,
            "succeeded": report.succeeded,
            "lost": report.unfinished,
            "duplicates": report.duplicates,
            "wrong": report.wrong,
            "attempts": report.attempts,
        },
    )
    assert done_before < 300, "the restart came too late to test anything"
    assert report.clean, report.problems
    assert report.succeeded == 300
    assert sorted(pool.alive()) == sorted(pool.processes), "a worker died during the restart"
    assert submit_until_accepted(client, 60).result(timeout=60) == 3, "workers stopped consuming"


@pytest.mark.parametrize("service", ["redis", "kafka"])
def test_submit_while_a_service_is_down_fails_fast_and_leaves_nothing(
    service: str, private_services: Config, make_private: Callable[..., Config]
) -> None:
    owned = private_services
    config = make_private(submit_timeout=4.0)
    with Client(config) as client:
        client.broker.ensure_topics()
        services.stop(owned, service)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="Kafka" if service == "kafka" else "Redis"):
                client.submit_with("add", [1, 2], wait=True)  # the fast path reports it in flush()
            elapsed = time.monotonic() - started
        finally:
            services.start(owned, service)
        assert elapsed < config.submit_timeout + 6, f"submit took {elapsed:.1f}s to fail"
        assert client.backend.count_tasks() == 0
        assert client.tasks().empty
