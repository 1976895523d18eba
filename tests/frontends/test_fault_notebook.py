"""notebooks/02-fault-tolerance.ipynb under strict nbval: the stored outputs of the cells whose output
is deterministic (the kill message, the result, the attempts, the task's history, what the dashboard
shows, the replay) are compared; only cells showing times, ids, widgets or plots ignore theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from yadtq.core.config import Config

pytestmark = pytest.mark.services

NOTEBOOK = ROOT / "notebooks" / "02-fault-tolerance.ipynb"


def test_most_cells_are_checked() -> None:
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    ignored = [c for c in cells if "NBVAL_IGNORE_OUTPUT" in "".join(c["source"])]
    checked = [c for c in cells if c not in ignored and c.get("outputs")]
    assert len(checked) >= 7 and len(ignored) <= 3, (len(checked), len(ignored))


@pytest.mark.timeout(300)
def test_fault_tolerance_notebook_runs_under_strict_nbval(base_config: Config) -> None:
    env = {
        **os.environ,
        "YADTQ_KAFKA_BOOTSTRAP": base_config.kafka_bootstrap,
        "YADTQ_REDIS_URL": base_config.redis_url,
    }
    env.pop("YADTQ_NAMESPACE", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        "--nbval-current-env",
        "--nbval-cell-timeout=120",
        str(NOTEBOOK),
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, f"nbval failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout
