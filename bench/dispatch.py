"""How long a task waits under each dispatch: one schedule, yadtq three ways, Huey, SimPy and Erlang C.

    python bench/dispatch.py [--tasks 600] [--seed 3] [--reps 1] [--systems shared,partitioned,pooled,huey]

The schedule is the lab's (``Experiment.schedule()``): 4 workers of one slot each, Poisson arrivals
at 32/s, exponential service with mean 0.1 s (utilisation 0.8). Every system gets the *same*
arrival and service times:

- yadtq through the lab's real run (``yadtq.lab.run.run``; a namespace of its own each time) with
  dispatch ``shared`` (4 processes, one Kafka share group: one queue), ``partitioned`` (4
  processes, one consumer group: each serves only its own partitions, 4 queues) and ``pooled`` (1
  process with 4 slots: one queue in one process);
- Huey with 4 worker processes on one Redis list (``bench/peers/huey_schedule.py``, run with the
  anchors' venv ``/tmp/anchors-venv``, made once by ``../shared/bench-anchors/setup.sh`` through
  ``bench/compare.prepare``), its tasks sleeping their service time, submitted at their arrival;
- the lab's SimPy model of the same schedule as one queue for 4 servers (M/M/4: shared and pooled)
  and as partitioned, and the M/M/4 (Erlang C) and 4 × M/M/1 formulas.

Wait and response are the lab's: from the *scheduled* arrival to the start, and to the moment the
result was stored. Real runs alternate systems, each repetition in a rotated order; each figure is
the median over repetitions. Writes bench/results/dispatch.json and bench/results/dispatch.png, and
prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEER = HERE / "peers" / "huey_schedule.py"
HUEY_PYTHON = Path("/tmp/anchors-venv/bin/python")
YADTQ = ("shared", "partitioned", "pooled")
#: Per-run figures kept, and reported as medians over the repetitions.
METRICS = (
    "response_mean",
    "response_p50",
    "response_p95",
    "response_p99",
    "wait_mean",
    "wait_p50",
    "wait_p95",
    "completed",
    "tasks",
    "service_mean",
    "utilisation_mean",
    "handoff_p50",
    "handoff_p90",
    "lateness_mean",
    "lateness_max",
    "overhead_per_task",
    "replay_response_mean",
    "replay_ideal_response_mean",
    "audit_lost",
    "audit_duplicated",
)
LABELS = {
    "shared": "yadtq shared\n(4 processes)",
    "pooled": "yadtq pooled\n(1 process × 4)",
    "huey": "Huey\n(4 processes)",
    "sim_mmc": "SimPy M/M/4\n(one queue)",
    "partitioned": "yadtq partitioned\n(4 processes)",
    "sim_partitioned": "SimPy partitioned\n(4 queues)",
}


def experiment(tasks: int, seed: int, dispatch: str = "shared"):
    from yadtq.lab.spec import Experiment

    return Experiment(
        name=f"dispatch-{dispatch}",
        arrival="poisson",
        arrival_rate=32.0,
        service="exponential",
        service_seconds=0.1,
        workers=4,
        concurrency=1,
        partitions=8,
        dispatch=dispatch,
        tasks=tasks,
        seed=seed,
    )


def handoff(result) -> dict[str, float]:
    """For the tasks that were queued when a slot of their worker became free: how long from that
    moment until they started (median and 90th percentile). It is the hand-off itself (fetch, claim,
    executor), which ``overhead_per_task`` averages together with the pick-up of tasks that arrived
    to an idle slot."""
    import heapq

    import numpy as np

    done = result.tasks.dropna(subset=["started", "finished"]).sort_values("started", kind="stable")
    slots = result.experiment.slots if result.experiment is not None else 1
    free: dict[str, list[float]] = {}
    gaps = []
    for worker, scheduled, start, finish in done[["worker", "scheduled", "started", "finished"]].itertuples(False):
        heap = free.setdefault(worker, [-float("inf")] * slots)
        ready = heapq.heappop(heap)
        if scheduled < ready:  # it was waiting when this slot came free
            gaps.append(start - ready)
        heapq.heappush(heap, finish)
    if not gaps:
        return {}
    return {"handoff_p50": float(np.median(gaps)), "handoff_p90": float(np.percentile(gaps, 90))}


def _pick(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in METRICS if summary.get(k) is not None}


# --- the runs ---------------------------------------------------------------------------------------
def run_yadtq(tasks: int, seed: int, dispatch: str) -> dict[str, Any]:
    from yadtq.lab.run import run

    result = run(experiment(tasks, seed, dispatch), progress=False)
    result.summary.update(handoff(result))
    s = result.summary
    out = _pick(s)
    out["utilisation"] = s.get("utilisation")
    out["namespace"] = s.get("namespace")
    return out


def run_huey(tasks: int, seed: int, schedule_file: Path) -> dict[str, Any]:
    """One Huey run in the anchors' venv, turned into a lab Result so its figures are computed the
    same way as yadtq's (``summarise``, ``dispatch_overhead``, ``replay``)."""
    from yadtq.lab.result import Result
    from yadtq.lab.simulate import dispatch_overhead, replay

    out_file = Path(tempfile.mkstemp(prefix="huey-dispatch-", suffix=".json")[1])
    try:
        subprocess.run(
            [str(HUEY_PYTHON), str(PEER), "--schedule", str(schedule_file), "--out", str(out_file), "--workers", "4"],
            cwd=ROOT,
            check=True,
            timeout=900,
        )
        payload = json.loads(out_file.read_text())
    finally:
        out_file.unlink(missing_ok=True)
    rows = payload["tasks"]
    frame = pd.DataFrame(
        {
            "id": [f"h{i:07d}" for i in range(len(rows))],
            "worker": [str(r["pid"]) if r["pid"] is not None else None for r in rows],
            "scheduled": [r["scheduled"] for r in rows],
            "submitted": [r["submitted"] for r in rows],
            "started": [r["started"] for r in rows],
            "finished": [r["finished"] for r in rows],
            "status": ["success" if r["finished"] is not None else None for r in rows],
            "attempts": 1,
            "executions": [r["executions"] for r in rows],
            "completions": [r["completions"] for r in rows],
        }
    ).astype({"started": float, "finished": float, "submitted": float})
    late = (frame["submitted"] - frame["scheduled"]).dropna()
    extra = {
        "lateness_mean": float(late.mean()) if len(late) else 0.0,
        "lateness_max": float(late.max()) if len(late) else 0.0,
        "audit_lost": int((frame["completions"] == 0).sum()),
        "audit_duplicated": int((frame["completions"] > 1).sum()),
    }
    result = Result.build(frame, experiment(tasks, seed, "shared"), "run", extra)
    overhead = dispatch_overhead(result)
    result.summary["overhead_per_task"] = overhead
    result.summary.update(handoff(result))
    for name, cost in (("replay_ideal", 0.0), ("replay", overhead)):
        result.summary[f"{name}_response_mean"] = replay(result, cost).summary["response_mean"]
    out = _pick(result.summary)
    out["utilisation"] = result.summary.get("utilisation")
    out["version"] = payload["versions"].get("huey")
    out["submit_errors"] = len(payload["submit_errors"])
    out["timed_out"] = payload["timed_out"]
    return out


def models(tasks: int, seed: int) -> dict[str, dict[str, Any]]:
    """The SimPy model of this very schedule (one queue; partitioned) and the formulas, nominal and at
    the rates this schedule really drew (``predict_sampled``)."""
    from yadtq.lab.simulate import simulate
    from yadtq.lab.theory import predict, predict_sampled

    spec = experiment(tasks, seed)
    out: dict[str, dict[str, Any]] = {}
    for key, dispatch in (("sim_mmc", "shared"), ("sim_partitioned", "partitioned")):
        out[key] = _pick(simulate(spec, dispatch).summary)
    for key, dispatch in (("mmc", "shared"), ("partitioned_mm1", "partitioned")):
        for suffix, predictor in (("", predict), ("_sampled", predict_sampled)):
            p = predictor(spec, dispatch)
            out[f"formula_{key}{suffix}"] = {
                "model": p.model,
                "arrival_rate": p.arrival_rate,
                "service_mean": 1 / p.service_rate,
                "utilisation": p.utilisation,
                "p_wait": p.p_wait,
                "wait_mean": p.mean_wait,
                "response_mean": p.mean_response,
            }
    return out


# --- the report -------------------------------------------------------------------------------------
def table(systems: dict[str, dict[str, Any]], mod: dict[str, dict[str, Any]]) -> str:
    sim = mod["sim_mmc"]
    lines = [
        "| system | mean response ms | p50 ms | p95 ms | mean wait ms | response ÷ SimPy M/M/4 | tasks done |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, m: dict[str, Any], done: str) -> None:
        lines.append(
            f"| {name} | {1000 * m['response_mean']:.0f} | {1000 * m.get('response_p50', float('nan')):.0f} "
            f"| {1000 * m.get('response_p95', float('nan')):.0f} | {1000 * m['wait_mean']:.0f} "
            f"| {m['response_mean'] / sim['response_mean']:.2f} | {done} |"
        )

    for key in ("shared", "pooled", "huey", "sim_mmc", "partitioned", "sim_partitioned"):
        if key in systems:
            m = systems[key]
            row(LABELS[key].replace("\n", " "), m, f"{m['completed']:.0f}/{m['tasks']:.0f}")
        elif key in mod:
            row(LABELS[key].replace("\n", " "), mod[key], "model")
    for key, name in (("formula_mmc", "M/M/4 formula"), ("formula_partitioned_mm1", "4 × M/M/1 formula")):
        f = mod[key]
        lines.append(
            f"| {name} (λ=32/s, mean service 100 ms) | {1000 * f['response_mean']:.0f} | | "
            f"| {1000 * f['wait_mean']:.0f} | {f['response_mean'] / sim['response_mean']:.2f} | formula |"
        )
    return "\n".join(lines)


def chart(systems: dict[str, dict[str, Any]], mod: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [
        k for k in ("shared", "pooled", "huey", "sim_mmc", "partitioned", "sim_partitioned") if k in systems or k in mod
    ]
    data = {k: systems.get(k) or mod[k] for k in keys}
    response = np.array([1000 * data[k]["response_mean"] for k in keys])
    wait = np.array([1000 * data[k]["wait_mean"] for k in keys])
    x = np.arange(len(keys))
    width = 0.38
    plt.rcParams.update({"font.size": 12})
    fig, ax = plt.subplots(figsize=(12, 6))
    hatch = ["" if not k.startswith("sim") else "//" for k in keys]
    bars_r = ax.bar(x - width / 2, response, width, color="tab:blue", label="mean response (scheduled → result)")
    bars_w = ax.bar(x + width / 2, wait, width, color="tab:orange", label="mean wait (scheduled → start)")
    for bars in (bars_r, bars_w):
        for bar, h in zip(bars, hatch, strict=True):
            bar.set_hatch(h)
            bar.set_edgecolor("white")
        ax.bar_label(bars, fmt="%.0f", fontsize=11, padding=2)
    from matplotlib.patches import Patch

    mmc, part = mod["formula_mmc"], mod["formula_partitioned_mm1"]
    lines = [
        ax.axhline(
            1000 * mmc["response_mean"],
            color="tab:blue",
            ls="--",
            lw=1.5,
            label=f"M/M/4 formula: response {1000 * mmc['response_mean']:.0f} ms",
        ),
        ax.axhline(
            1000 * mmc["wait_mean"],
            color="tab:orange",
            ls="--",
            lw=1.5,
            label=f"M/M/4 formula: wait {1000 * mmc['wait_mean']:.0f} ms",
        ),
        ax.axhline(
            1000 * part["response_mean"],
            color="dimgray",
            ls=":",
            lw=1.5,
            label=f"4 × M/M/1 formula (partitioned): response {1000 * part['response_mean']:.0f} ms",
        ),
    ]
    hatched = Patch(facecolor="lightgray", hatch="//", edgecolor="white", label="SimPy model of the same schedule")
    ax.legend(handles=[bars_r, bars_w, *lines, hatched], loc="upper left", fontsize=11, framealpha=0.95)
    ax.set_xticks(x, [LABELS[k] for k in keys], fontsize=11)
    ax.set_ylabel("milliseconds", fontsize=12)
    ax.set_ylim(0, max(response.max(), 1000 * part["response_mean"]) * 1.5)
    ax.set_title(title, fontsize=13)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def code_state() -> dict[str, str]:
    """The commit, and a digest of the uncommitted changes under yadtq/ (the lab is being edited):
    which code a result was measured on."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        return done.stdout

    diff = git("diff", "HEAD", "--", "yadtq")
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "yadtq_uncommitted_diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument(
        "--seed", type=int, default=3, help="3: the first seed whose sample is within 1.5%% of both nominal rates"
    )
    parser.add_argument("--reps", type=int, default=1, help="real runs per system, alternating systems")
    parser.add_argument("--systems", default="shared,partitioned,pooled,huey", help="real runs, in this order")
    parser.add_argument("--anchors", type=Path, default=ROOT.parent / "shared" / "bench-anchors")
    parser.add_argument("--out", type=Path, default=RESULTS / "dispatch.json")
    args = parser.parse_args()
    if args.tasks < 600:
        print(f"note: {args.tasks} tasks is fewer than the 600 this benchmark is meant for", file=sys.stderr)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - {*YADTQ, "huey"}
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")

    spec = experiment(args.tasks, args.seed)
    schedule = spec.schedule()
    mod = models(args.tasks, args.seed)
    schedule_file = Path(tempfile.mkstemp(prefix="dispatch-schedule-", suffix=".json")[1])
    schedule_file.write_text(
        json.dumps({"arrivals": schedule.arrivals.tolist(), "services": schedule.services.tolist(), "seed": args.seed})
    )
    if "huey" in systems and not HUEY_PYTHON.exists():
        sys.path.insert(0, str(HERE))
        from compare import prepare  # makes the anchors' venvs once, in a copy of the anchors

        shutil.rmtree(prepare(args.anchors), ignore_errors=True)

    from tqdm import tqdm

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    turns = []
    for rep in range(1, args.reps + 1):
        shift = (rep - 1) % len(systems)
        turns += [(rep, name) for name in systems[shift:] + systems[:shift]]
    started = dt.datetime.now().astimezone()
    try:
        with tqdm(turns, desc="dispatch", unit="run", file=sys.stderr) as bar:
            for rep, name in bar:
                bar.set_postfix_str(f"rep {rep}: {name}")
                load = os.getloadavg()[0]
                clock = time.monotonic()
                if name == "huey":
                    result = run_huey(args.tasks, args.seed, schedule_file)
                else:
                    result = run_yadtq(args.tasks, args.seed, name)
                result.update(
                    rep=rep,
                    seconds=round(time.monotonic() - clock, 1),
                    load_avg=round((load + os.getloadavg()[0]) / 2, 2),
                )
                runs[name].append(result)
                bar.write(
                    f"rep {rep} {name:12s} response mean {1000 * result['response_mean']:6.1f} ms, "
                    f"wait mean {1000 * result['wait_mean']:6.1f} ms, {result['completed']}/{result['tasks']} done, "
                    f"load {result['load_avg']}",
                    file=sys.stderr,
                )
    finally:
        schedule_file.unlink(missing_ok=True)

    medians = {
        name: {k: statistics.median(r[k] for r in rs) for k in METRICS if all(k in r for r in rs)}
        for name, rs in runs.items()
        if rs
    }
    sampled_rate = len(schedule) / float(schedule.arrivals[-1])
    payload = {
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": "python bench/dispatch.py " + " ".join(sys.argv[1:]),
        "code": code_state(),
        "experiment": spec.to_dict(),
        "schedule": {
            "tasks": len(schedule),
            "sampled_arrival_rate": sampled_rate,
            "sampled_service_mean": float(schedule.services.mean()),
            "sampled_utilisation": sampled_rate * float(schedule.services.mean()) / spec.servers,
        },
        "reps": args.reps,
        "systems": medians,
        "models": mod,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    title = (
        f"{args.tasks} tasks, Poisson 32/s, exponential service 100 ms, 4 servers (ρ = 0.8), seed {args.seed}; "
        f"median of {args.reps} run{'s' if args.reps > 1 else ''}"
    )
    chart(medians, mod, args.out.with_suffix(".png"), title)
    print(table(medians, mod))
    sim = mod["sim_mmc"]["response_mean"]
    mean = {name: m["response_mean"] for name, m in medians.items()}
    for name in ("shared", "pooled", "partitioned"):
        if name in mean and "huey" in mean:
            print(f"{name} ÷ huey (mean response): {mean[name] / mean['huey']:.2f}")
    for name in mean:
        print(f"{name} ÷ SimPy M/M/4 (mean response): {mean[name] / sim:.2f}")
    if "partitioned" in mean and "shared" in mean:
        print(f"partitioned ÷ shared (mean response): {mean['partitioned'] / mean['shared']:.2f}")


if __name__ == "__main__":
    main()
