"""A real run's set-up without services: the workers' settings per dispatch, and when the group is ready."""

from __future__ import annotations

import pandas as pd
import pytest

from yadtq.core.config import Config
from yadtq.core.errors import ServiceUnavailable
from yadtq.lab.run import _wait_for_group, worker_config
from yadtq.lab.spec import Experiment

SPEC = Experiment(arrival_rate=8, service_seconds=0.1, workers=4, partitions=8, concurrency=2, tasks=10)


@pytest.mark.parametrize(
    ("dispatch", "kafka_dispatch", "processes", "slots"),
    [("shared", "shared", 4, 2), ("partitioned", "partitioned", 4, 2), ("pooled", "partitioned", 1, 8)],
)
def test_workers_get_the_dispatch_and_slots_of_the_spec(
    dispatch: str, kafka_dispatch: str, processes: int, slots: int
) -> None:
    spec = SPEC.replace(dispatch=dispatch)
    config = worker_config(spec, Config.from_env(env={}))
    # shared: a share group; partitioned, and pooled (one process owning every partition): a consumer group
    assert config.dispatch == kafka_dispatch
    assert (spec.processes, config.concurrency) == (processes, slots)
    assert config.partitions == 8 and config.shed_after == 0 and "yadtq.lab.probe" in config.imports
    assert config.namespace.startswith("lab") and config.namespace != worker_config(spec, config).namespace


class FakeClient:
    """``workers()`` as the run reads it: one row per worker, idle, with the partitions it lists."""

    def __init__(self, partitions: list[str]) -> None:
        self.table = pd.DataFrame(
            {
                "name": [f"worker-{i + 1}" for i in range(len(partitions))],
                "state": ["idle"] * len(partitions),
                "partitions": partitions,
            }
        )

    def workers(self) -> pd.DataFrame:
        return self.table


class FakePool:
    """Its worker logs are read only for the message of a set-up that timed out: there are none."""

    def __init__(self) -> None:
        self.processes: dict[str, object] = {}


def fast(spec: Experiment) -> Experiment:
    return spec.replace(heartbeat_interval=0.05, heartbeat_timeout=0.2)


def test_shared_workers_are_ready_once_they_heartbeat_whatever_partitions_they_list() -> None:
    # each lists partition 0, the share-group topic's only one: no partition is a worker's own
    _wait_for_group(FakeClient(["0", "0", "0", "0"]), FakePool(), fast(SPEC), timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable, match="did not join the share group"):
        _wait_for_group(FakeClient(["0", "0", "0"]), FakePool(), fast(SPEC), timeout=0.5)  # type: ignore[arg-type]


def test_a_consumer_group_is_ready_only_once_every_partition_is_dealt() -> None:
    partitioned = fast(SPEC.replace(dispatch="partitioned"))
    with pytest.raises(ServiceUnavailable, match="did not join and own all partitions"):
        _wait_for_group(FakeClient(["0", "0", "0", "0"]), FakePool(), partitioned, timeout=0.5)  # type: ignore[arg-type]
    dealt = FakeClient(["0,1", "2,3", "4,5", "6,7"])
    _wait_for_group(dealt, FakePool(), partitioned, timeout=5)  # type: ignore[arg-type]
