"""Messages fetched but not started when a rebalance hands a worker back its own partitions.

Found by the Redis SIGKILL test under CPU load: after a shed (a worker whose every slot is busy
rejoins announcing no free slot) the group gave every worker its partitions back, and tasks fetched
before it were never run, while the group committed past them. The cause: on revocation the worker
drops the fetched messages of its partitions (``Runner.drop``, ``OffsetLedger.forget``) expecting
the next owner to fetch them again from the last commit, but kafka-python 3.0 keeps a partition's
fetch position when the same consumer gets it back (``SubscriptionState.assign_from_subscribed``
"preserves TopicPartitionState (position, ...) for any partition present in both the prior and new
assignments"), so nobody fetches them again. The worker's rebalance listener now forgets only the
partitions that did not come back (``tests/unit/worker/test_listener.py`` checks the rule on its own).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from tests.conftest import live_workers
from yadtq import Client
from yadtq.core.config import Config
from yadtq.lab.audit import audit, execution_counts
from yadtq.processes.pool import Pool

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def make_config(make_config: Callable[..., Config]) -> Callable[..., Config]:
    """Partitions changing hands are a consumer group's: these tests pin ``dispatch = "partitioned"``."""
    return functools.partial(make_config, dispatch="partitioned")


def test_messages_fetched_before_a_shed_still_run(make_config, tmp_path, wait_for) -> None:
    config = make_config(imports=("tests.ops_fixture", "yadtq.lab.probe"), partitions=1, shed_after=1.0)
    with Client(config) as client, Pool(config, log_dir=tmp_path) as pool:
        pool.start(1)
        wait_for(live_workers(client, 1), timeout=60, what="a worker")
        tokens = {client.submit_with("lab.work", [3.0, "long"], wait=True).id: "long"}
        tokens.update({client.submit_with("lab.work", [0.0, f"q{i}"], wait=True).id: f"q{i}" for i in range(10)})
        # the long task takes every slot; after shed_after the worker rejoins, alone, and gets its
        # one partition straight back with the ten short tasks already fetched
        wait_for(
            lambda: audit(client.backend, tokens).unfinished == 0,
            timeout=30,
            what="all 11 tasks to finish (the 10 fetched before the shed never run)",
        )
        report = audit(client.backend, tokens, executions=execution_counts(client.backend, tokens))
        assert report.clean and report.executions == 11, report
