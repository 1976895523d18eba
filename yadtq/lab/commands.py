"""``yadtq lab ...``: the lab from the terminal. The parser lives here so that ``yadtq.frontends.cli`` only
hooks it in; every command is a call into the lab's modules, and mistakes are :class:`SpecError`
(one line, exit code 2, through ``yadtq.frontends.cli``'s error mapping)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yadtq.core.config import Config

if TYPE_CHECKING:
    from yadtq.lab.spec import Experiment


def add_parser(sub: Any) -> None:
    """Add ``lab run|predict|sweep`` to the ``yadtq`` command's subparsers."""
    lab = sub.add_parser("lab", help="load experiments: predict, simulate and run them (see docs/lab.md)")
    commands = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    p = commands.add_parser("run", help="run an experiment on real workers; write its results and plots")
    p.add_argument("spec", help="experiment JSON file")
    p.add_argument("-o", "--output", help="directory for the results (default: lab-results/NAME-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = commands.add_parser("predict", help="theory and simulation of an experiment (no services needed)")
    p.add_argument("spec", help="experiment JSON file")
    p = commands.add_parser("sweep", help="predict, simulate and run an experiment over a grid of settings")
    p.add_argument("spec", help="experiment JSON file")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a field and its values (repeatable)"
    )
    p.add_argument("-o", "--output", help="directory for sweep.csv and sweep.png")
    p.add_argument("--simulate-only", action="store_true", help="skip the real runs (no services needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(config: Config, args: argparse.Namespace) -> int:
    from yadtq.lab.spec import Experiment  # numpy: only for lab commands, not in every `yadtq` process

    spec = Experiment.load(args.spec)
    if args.lab_command == "predict":
        return predict(spec)
    if args.lab_command == "run":
        return run(spec, config, args)
    return sweep(spec, config, args)


#: Width of the model column of ``lab predict``.
LABEL_WIDTH = 30


def predict(spec: Experiment) -> int:
    from yadtq.lab.simulate import simulate
    from yadtq.lab.spec import DISPATCHES
    from yadtq.lab.theory import label
    from yadtq.lab.theory import predict as formula

    print(
        f"{spec.name}: {spec.expected_tasks:.0f} tasks, {spec.dispatch} dispatch "
        f"({spec.processes} worker process(es) x {spec.slots} slot(s)), busiest worker at ρ = {spec.busiest_load:.3f}"
    )
    for dispatch in DISPATCHES:
        mark = "*" if dispatch == spec.dispatch else " "
        try:
            p = formula(spec, dispatch)
            print(
                f" {mark}{label(dispatch, p):<{LABEL_WIDTH}} wait {p.mean_wait:.4f} s  "
                f"response {p.mean_response:.4f} s  in system {p.mean_in_system:.3f}  P(wait) {p.p_wait:.3f}"
            )
        except ValueError as exc:
            print(f" {mark}{dispatch:<{LABEL_WIDTH}} no formula: {exc}")
    print("  (* the spec's own dispatch)")
    s = simulate(spec).summary
    print(
        f" *{'simulation (SimPy)':<{LABEL_WIDTH}} wait {s['wait_mean']:.4f} s  response {s['response_mean']:.4f} s  "
        f"in system {s['mean_in_system']:.3f}  p99 response {s['response_p99']:.4f} s"
    )
    return 0


def run(spec: Experiment, config: Config, args: argparse.Namespace) -> int:
    from yadtq.lab.run import run as run_experiment

    out = Path(args.output or Path("lab-results") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_experiment(spec, config=config, progress=not args.no_progress)
    result.save(out)
    _save_plots(result, out)
    s = result.summary
    print(
        f"{s['completed']}/{s['tasks']} tasks  response mean {s['response_mean']:.4f} s (p99 {s['response_p99']:.4f})"
        f"  wait mean {s['wait_mean']:.4f} s  throughput {s['throughput']:.3f}/s"
    )
    print(
        f"replay {s['replay_response_mean']:.4f} s  overhead {1000 * s['overhead_per_task']:.1f} ms/task  "
        f"generator late by up to {1000 * s['lateness_max']:.0f} ms"
    )
    print(
        f"Little's law: L sampled {s['sampled_in_system']:.3f} tasks ({s['littles_samples']} samples), "
        f"λ·W {s['littles_lambda_w']:.3f} tasks, {s['littles_error']:.2%} apart"
    )
    print(
        f"audit: lost {s['audit_lost']}  duplicated {s['audit_duplicated']}  restarted {s['audit_restarted']}  "
        f"completed once {s['audit_completed_once']}"
    )
    faults = result.faults
    if faults is not None and len(faults):
        print("faults (seconds from the first arrival; detected/recovered: seconds after the fault):")
        print(faults.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"results in {out}")
    return 0


def sweep(spec: Experiment, config: Config, args: argparse.Namespace) -> int:
    from yadtq.lab.sweep import sweep as run_sweep

    grid = dict(_grid_item(item) for item in args.grid)
    frame = run_sweep(spec, measure=not args.simulate_only, config=config, progress=not args.no_progress, **grid)
    shown = [c for c in frame.columns if c in grid or c == "utilisation" or c.endswith("response_mean")]
    print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / "sweep.csv", index=False)
        _save_sweep_plot(frame, out)
        print(f"results in {out}")
    return 0


def _grid_item(text: str) -> tuple[str, list[Any]]:
    from yadtq.lab.spec import SpecError

    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise SpecError(f"--grid takes KEY=V1,V2,... (for example arrival_rate=5,10), not {text!r}.")
    parsed = []
    for value in values.split(","):
        try:
            parsed.append(json.loads(value))
        except ValueError:
            parsed.append(value)
    return key.strip(), parsed


def _save_plots(result: Any, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yadtq.lab.plots import fault_timeline, gantt, response_distribution
    from yadtq.lab.theory import labelled_predictions

    # the spec's own dispatch first; pooled and shared share a formula, so it is drawn once
    predictions = labelled_predictions(result.experiment)
    drawings = [
        ("gantt", lambda: gantt(result)),
        ("response", lambda: response_distribution(result, None, predictions)),
    ]
    if result.beats is not None and not result.beats.empty:  # heartbeats, faults and their detection
        drawings.append(("timeline", lambda: fault_timeline(result)))
    for name, draw in drawings:
        ax = draw()
        ax.figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)


def _save_sweep_plot(frame: Any, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yadtq.lab.plots import sweep_plot

    if frame["utilisation"].nunique() < 2 or math.isnan(frame["utilisation"].iloc[0]):
        return
    top, _ = sweep_plot(frame)
    top.figure.savefig(out / "sweep.png", dpi=100, bbox_inches="tight")
    plt.close(top.figure)
