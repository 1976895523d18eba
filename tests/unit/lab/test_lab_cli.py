"""``yadtq lab`` without services: predict, a simulated sweep, and one-line refusals (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from yadtq.frontends import cli
from yadtq.lab import Experiment


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return Experiment(name="cls", arrival_rate=10, service_seconds=0.1, workers=2, tasks=2000).save(tmp_path / "s.json")


def test_predict_prints_every_dispatch_and_the_simulation(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "predict", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "shared dispatch (2 worker process(es) x 1 slot(s)), busiest worker at ρ = 0.500" in out
    # the spec's own dispatch (shared, the default) is marked; shared and pooled are one M/M/c queue
    assert " *shared: M/M/c                  wait 0.0333 s  response 0.1333 s" in out
    assert "  partitioned: M/M/1 per worker  wait 0.1000 s  response 0.2000 s" in out  # 1 / (10 − 5)
    assert "  pooled: M/M/c                  wait 0.0333 s  response 0.1333 s" in out
    assert " *simulation (SimPy)" in out


def test_predict_says_when_there_is_no_formula(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Experiment(arrival="constant", tasks=100).save(tmp_path / "c.json")
    assert cli.main(["lab", "predict", str(path)]) == 0
    assert "no formula: the formulas assume Poisson arrivals" in capsys.readouterr().out


def test_a_simulated_sweep_writes_a_tidy_table(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    grid = ["--grid", "arrival_rate=4,12", "--grid", "workers=2,4"]
    code = cli.main(["lab", "sweep", str(spec), *grid, "--simulate-only", "-o", str(out), "--no-progress"])
    assert code == 0
    frame = pd.read_csv(out / "sweep.csv")
    assert len(frame) == 4 and list(frame["arrival_rate"]) == [4, 4, 12, 12] and list(frame["workers"]) == [2, 4, 2, 4]
    assert frame["partitioned_response_mean"].iloc[0] == pytest.approx(1 / (10 - 2))  # M/M/1 at λ = 2 per worker
    # the spec's own dispatch is shared: one queue, M/M/c
    assert list(frame["theory_response_mean"]) == pytest.approx(list(frame["mmc_response_mean"]))
    assert (frame["mmc_response_mean"] < frame["partitioned_response_mean"]).all()
    assert "measured_response_mean" not in frame
    assert (out / "sweep.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{missing}"], "yadtq: cannot read the experiment file"),
        (["predict", "{bad}"], "yadtq: arrival_rate must be a positive number, not -3."),
        (["sweep", "{spec}", "--grid", "arrival_rate"], "yadtq: --grid takes KEY=V1,V2,..."),
        (["sweep", "{spec}", "--grid", "speed=1,2", "--simulate-only"], "yadtq: unknown experiment field(s): speed;"),
        (["sweep", "{spec}", "--simulate-only"], "yadtq: a sweep needs at least one field with a list of values"),
        (["sweep", "{spec}", "--grid", "workers=0,2", "--simulate-only"], "yadtq: workers must be a whole number"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    argv: list[str], message: str, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"arrival_rate": -3}')
    paths = {"spec": str(spec), "bad": str(bad), "missing": str(tmp_path / "missing.json")}
    assert cli.main(["lab", *(a.format(**paths) for a in argv)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""


def test_predict_and_sweep_cover_every_dispatch_and_concurrency(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pooled = Experiment.load(spec).replace(dispatch="pooled").save(tmp_path / "pooled.json")
    assert cli.main(["lab", "predict", str(pooled)]) == 0
    out = capsys.readouterr().out
    assert "pooled dispatch (1 worker process(es) x 2 slot(s))" in out
    assert " *pooled: M/M/c                  wait 0.0333 s" in out and "  partitioned: M/M/1 per worker" in out
    assert "  shared: M/M/c                  wait 0.0333 s" in out
    out_dir = tmp_path / "grid"
    grid = ["--grid", "dispatch=shared,partitioned,pooled", "--grid", "concurrency=1,2"]
    assert cli.main(["lab", "sweep", str(spec), *grid, "--simulate-only", "-o", str(out_dir), "--no-progress"]) == 0
    frame = pd.read_csv(out_dir / "sweep.csv").set_index(["dispatch", "concurrency"])
    # pooling beats partitioning at the same number of slots, in the formulas and the simulation
    for column in ("theory_response_mean", "simulated_response_mean"):
        assert frame.loc[("pooled", 1), column] < frame.loc[("partitioned", 1), column]
        assert frame.loc[("shared", 1), column] < frame.loc[("partitioned", 1), column]
        # shared and pooled: one queue for the same slots, the same formula and the same simulated times
        assert frame.loc[("shared", 1), column] == pytest.approx(frame.loc[("pooled", 1), column])
    assert frame.loc[("pooled", 1), "theory_response_mean"] == pytest.approx(0.1333, abs=1e-4)
    assert frame.loc[("partitioned", 2), "theory_response_mean"] < frame.loc[("partitioned", 1), "theory_response_mean"]
