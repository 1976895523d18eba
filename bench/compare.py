"""yadtq beside Celery, RQ, Dramatiq, Huey and arq, on the same workload, in one run.

    python bench/compare.py [--tasks 10000] [--reps 3] [--systems huey,dramatiq,celery,rq,arq]

The peers are run by ../shared/bench-anchors (copied to a temporary folder first; its ``setup.sh``
makes its two venvs once, with apt-get and pip), each on its own private Redis, with its own
harness: enqueue ``add(i, i)`` one call at a time, fetch every result in order, verify them, then
200 sequential round trips. yadtq runs ``bench/throughput.py`` on the same N twice: with its default
shared dispatch ("yadtq") and with its consumer group ("yadtq partitioned"). Turns alternate
(each repetition rotates the order, so a burst of load from elsewhere hits several systems rather
than every run of one), and each figure is the median of the repetitions.

Writes bench/results/compare.json and bench/results/compare.png, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
ANCHORS = ROOT.parent / "shared" / "bench-anchors"
VENVS = {"arq": Path("/tmp/anchors-venv-arq")}
DEFAULT_VENV = Path("/tmp/anchors-venv")
METRICS = ("enqueue_per_s", "drain_per_s", "p50_ms", "p95_ms", "p99_ms")


def prepare(source: Path) -> Path:
    """A writable copy of the anchors, with their venvs made once."""
    work = Path(tempfile.mkdtemp(prefix="bench-anchors-"))
    shutil.copytree(source, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results", "logs", "run"))
    for sub in ("results", "logs", "run"):
        (work / sub).mkdir(exist_ok=True)
    if not all((v / "bin" / "python").exists() for v in (DEFAULT_VENV, *VENVS.values())):
        print("making the peers' venvs with the anchors' setup.sh (once; a few minutes)", file=sys.stderr)
        subprocess.run(["bash", "setup.sh"], cwd=work, check=True, timeout=1800)
    return work


def run_peer(work: Path, system: str, rep: int, tasks: int) -> dict[str, Any]:
    python = VENVS.get(system, DEFAULT_VENV) / "bin" / "python"
    env = {**os.environ, "BENCH_N": str(tasks)}
    subprocess.run(
        [str(python), "bench.py", "--system", system, "--rep", str(rep)], cwd=work, env=env, check=False, timeout=900
    )
    payload = json.loads((work / "results" / "perf" / f"{system}.run{rep}.json").read_text())
    run = payload["run"]
    if not payload.get("verified"):
        raise RuntimeError(f"{system} run {rep} failed verification: {run.get('error')}")
    return {
        "enqueue_per_s": run["throughput"]["enqueue_per_s"],
        "drain_per_s": run["throughput"]["drain_per_s"],
        **{f"{p}_ms": run["latency"][f"{p}_ms"] for p in ("p50", "p95", "p99")},
        "version": payload.get("versions", {}).get(system),
    }


#: yadtq's runs: its default (shared dispatch, one share group) and its consumer group.
YADTQ = {"yadtq": "shared", "yadtq partitioned": "partitioned"}


def run_yadtq(tasks: int, dispatch: str) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    subprocess.run(
        [sys.executable, str(HERE / "throughput.py"), "--tasks", str(tasks), "--dispatch", dispatch, "--out", str(out)],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    summary = json.loads(out.read_text())
    out.unlink()
    return {
        "enqueue_per_s": summary["enqueue_per_s"],
        "drain_per_s": summary["drain_per_s"],
        **{f"{p}_ms": summary["latency_ms"][p] for p in ("p50", "p95", "p99")},
        "worker_rss_mb": summary["worker_rss_mb"],
        "client_rss_mb": summary["client_rss_mb"],
    }


def table(medians: dict[str, dict[str, float]]) -> str:
    ours = medians["yadtq"]
    lines = [
        "| system | enqueue/s | drain/s | p50 ms | p95 ms | p99 ms | yadtq's drain ÷ this | yadtq's enqueue ÷ this |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in sorted(medians.items(), key=lambda kv: -kv[1]["drain_per_s"]):
        lines.append(
            f"| {name} | {m['enqueue_per_s']:,.0f} | {m['drain_per_s']:,.0f} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} "
            f"| {m['p99_ms']:.2f} | {ours['drain_per_s'] / m['drain_per_s']:.2f} "
            f"| {ours['enqueue_per_s'] / m['enqueue_per_s']:.2f} |"
        )
    return "\n".join(lines)


def chart(medians: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(medians, key=lambda n: -medians[n]["drain_per_s"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(
        axes,
        [("enqueue_per_s", "enqueue (tasks/s)"), ("drain_per_s", "drain (tasks/s)"), ("p50_ms", "latency p50 (ms)")],
        strict=True,
    ):
        values = [medians[n][key] for n in names]
        bars = ax.bar(names, values, color=["tab:red" if n.startswith("yadtq") else "tab:gray" for n in names])
        ax.bar_label(bars, fmt="%.0f" if key != "p50_ms" else "%.1f", fontsize=8)
        ax.set_title(title)
        if key == "p50_ms":
            ax.set_yscale("log")  # arq's 1 ms client poll on top of its 0.5 s worker poll dwarfs the rest
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n") for n in names])
    fig.suptitle("add(i, i), one submit call per task, 2 worker processes, median of the repetitions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--systems", default="huey,dramatiq,celery,rq,arq")
    parser.add_argument("--anchors", type=Path, default=ANCHORS)
    args = parser.parse_args()
    peers = [s for s in args.systems.split(",") if s]
    work = prepare(args.anchors)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*YADTQ, *peers]}
    subprocess.run(["bash", "redis_ctl.sh", "start"], cwd=work, check=True, timeout=60)
    try:
        for rep in range(1, args.reps + 1):
            order = [*YADTQ, *peers]
            shift = (rep - 1) % len(order)
            for name in order[shift:] + order[:shift]:
                print(f"rep {rep}: {name}", file=sys.stderr)
                load = os.getloadavg()[0]
                result = run_yadtq(args.tasks, YADTQ[name]) if name in YADTQ else run_peer(work, name, rep, args.tasks)
                # the 1-minute load average around the run: this machine's other work, for the record
                result["load_avg"] = round((load + os.getloadavg()[0]) / 2, 2)
                runs[name].append(result)
    finally:
        subprocess.run(["bash", "redis_ctl.sh", "stop"], cwd=work, check=False, timeout=60)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in METRICS} for name, rs in runs.items()}
    for name in YADTQ:
        for key in ("worker_rss_mb", "client_rss_mb"):
            medians[name][key] = statistics.median(r[key] for r in runs[name])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.json").write_text(
        json.dumps({"tasks": args.tasks, "reps": args.reps, "medians": medians, "runs": runs}, indent=2) + "\n"
    )
    chart(medians, RESULTS / "compare.png")
    print(table(medians))
    print(f"yadtq worker RSS {medians['yadtq']['worker_rss_mb']} MB, client RSS {medians['yadtq']['client_rss_mb']} MB")


if __name__ == "__main__":
    main()
