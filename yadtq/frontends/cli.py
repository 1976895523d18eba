"""``yadtq``: the terminal front end. No logic lives here; every command is a call into the library.

A user mistake prints one line on stderr and exits non-zero (2: bad input, including a task id that
names no task or several, 3: a service is unavailable, 1: the task failed, 4: timed out waiting); it
never prints a traceback. Commands that take a task id also take a unique prefix of one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from yadtq.core.config import DELIVERY_MODES, DISPATCH_MODES, Config
from yadtq.core.errors import (
    ConfigError,
    InvalidTask,
    NotCancellable,
    ServiceError,
    ServiceUnavailable,
    TaskFailed,
    TaskTimeout,
    UnknownTask,
    YadtqError,
)
from yadtq.frontends.tables import LOCAL, render

EXIT_CODES: list[tuple[type[YadtqError], int]] = [
    (TaskFailed, 1),
    (InvalidTask, 2),
    (ConfigError, 2),
    (NotCancellable, 2),
    (ServiceUnavailable, 3),
    (ServiceError, 3),
    (TaskTimeout, 4),
]


def parse_value(text: str) -> Any:
    """A command-line argument as a task argument: JSON if it parses (2, 2.5, [1,2], "x"), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yadtq", description="Yet Another Distributed Task Queue (Kafka + Redis).")
    parser.add_argument("--namespace", help="topic and key prefix (default: yadtq, or $YADTQ_NAMESPACE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start local Kafka and Redis (or say they already run)")
    sub.add_parser("down", help="stop the Kafka and Redis that `up` started")
    p = sub.add_parser("worker", help="run a worker in this terminal until Ctrl-C / SIGTERM")
    p.add_argument("--name", help="worker name (default: host-pid)")
    p.add_argument("--max-tasks", type=int, help="exit after this many messages")
    p.add_argument("--concurrency", type=int, help="tasks run at once, each in its own process (default 1)")
    p.add_argument("--delivery", choices=DELIVERY_MODES, help="delivery semantics (default effectively_once)")
    p.add_argument("--dispatch", choices=DISPATCH_MODES, help="shared (a Kafka share group, default) or partitioned")
    p = sub.add_parser("submit", help="submit a task, e.g. `yadtq submit add 2 3 --wait`")
    p.add_argument("op", help="operation name (see `yadtq ops`)")
    p.add_argument("args", nargs="*", help="arguments, as JSON where they parse (2, 2.5, [1,2,3])")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait with --wait (default 30)")
    p.add_argument("--max-retries", type=int, help="retries for infrastructure failures")
    p.add_argument("--time-limit", type=float, help="seconds the task may run")
    p.add_argument("--retry-errors", action="store_true", help="also retry the operation's own errors")
    for name, text in [
        ("status", "status of a task"),
        ("result", "wait for a task's result"),
        ("history", "every status change of a task"),
        ("cancel", "cancel a task that has not started"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("task_id", help="the task id, or a unique prefix of it (e.g. its first 8 characters)")
        if name == "result":
            p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("tasks", help="the newest tasks")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("workers", help="the live workers with their state and counters")
    p.add_argument("--all", action="store_true", help="also the stopped and dead ones")
    p = sub.add_parser("dlq", help="dead-lettered messages, newest first")
    p.add_argument("--limit", type=int, default=20)
    sub.add_parser("ops", help="the operations workers can run")
    p = sub.add_parser("demo", help="services up, 3 workers, a batch of tasks, the final tables")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--tasks", type=int, default=30)
    add_lab_parser(sub)
    add_monitor_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.from_env(namespace=args.namespace)
        logging.getLogger("kafka").setLevel(config.kafka_log_level.upper())
        if args.command == "worker":
            logging.getLogger("yadtq").setLevel(config.log_level.upper())
        return COMMANDS[args.command](config, args) or 0
    except YadtqError as exc:
        print(f"yadtq: {exc}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)
    except KeyboardInterrupt:
        return 130


# --- commands ------------------------------------------------------------------------------------
def cmd_up(config: Config, args: argparse.Namespace) -> int:
    from yadtq.processes import services

    services.up(config)
    return 0


def cmd_down(config: Config, args: argparse.Namespace) -> int:
    from yadtq.processes import services

    services.down(config)
    return 0


def cmd_worker(config: Config, args: argparse.Namespace) -> int:
    from yadtq.worker.worker import Worker

    config = config.replace(
        **{
            k: v
            for k, v in (("concurrency", args.concurrency), ("delivery", args.delivery), ("dispatch", args.dispatch))
            if v is not None
        }
    )
    from yadtq.worker.observe import worker_hooks

    worker = Worker(config, name=args.name, hooks=worker_hooks(config))
    worker.install_signal_handlers()
    worker.run(max_tasks=args.max_tasks)
    return 0


def cmd_submit(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        handle = client.submit_with(
            args.op,
            [parse_value(a) for a in args.args],
            max_retries=args.max_retries,
            time_limit=args.time_limit,
            retry_errors=args.retry_errors,
            wait=True,  # one task from a terminal: say "accepted" only once Kafka has it
        )
        if not client.live_workers():
            print("yadtq: queued; no worker is running (start one with `yadtq worker`)", file=sys.stderr)
        if not args.wait:
            print(handle.id)
            return 0
        print(json.dumps(handle.result(timeout=args.timeout)))
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        try:
            task_id = client.resolve(args.task_id)
            record = client.task(task_id)
            if record is None:  # expired since it was resolved
                raise UnknownTask(f"no task with id {task_id!r} (never submitted, or expired)")
        except UnknownTask:
            print("unknown")  # the status, for scripts; the reason goes to stderr with exit code 2
            raise
        line = record["status"]
        if record.get("result") is not None:
            line += f"  result={json.dumps(record['result'])}"
        if record.get("error"):
            line += f"  error={record['error']}"
        print(f"{line}  attempts={record['attempts']}  worker={record.get('worker') or '-'}")
    return 0


def cmd_result(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        print(json.dumps(client.result(client.resolve(args.task_id), timeout=args.timeout)))
    return 0


def cmd_history(config: Config, args: argparse.Namespace) -> int:
    import pandas as pd

    from yadtq.client.client import Client

    with Client(config) as client:
        rows = client.history(client.resolve(args.task_id))
        frame = pd.DataFrame(rows, columns=["at", "status", "worker", "attempt", "note"])
        frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
        print(render(frame, width=120))  # notes hold error messages: show them whole
    return 0


def cmd_cancel(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        print(client.cancel(client.resolve(args.task_id)).value)
    return 0


def cmd_tasks(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        frame = client.tasks(limit=args.limit)
        print(
            render(
                frame[
                    [
                        "id",
                        "op",
                        "args",
                        "status",
                        "result",
                        "error",
                        "worker",
                        "attempts",
                        "submitted_at",
                        "finished_at",
                    ]
                ]
            )
        )
        print(f"({len(frame)} newest of {client.backend.count_tasks()} tasks)")
    return 0


def cmd_workers(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        frame = client.workers(live_only=not args.all)
        print(
            render(
                frame[["name", "pid", "state", "current_task", "processed", "failed", "partitions", "last_heartbeat"]]
            )
        )
        if frame.empty and not args.all:
            print("No worker is running; `yadtq workers --all` also lists stopped and dead ones.")
        if client.live_workers() > config.partitions:
            print(
                f"Workers without a partition stay idle: the task topic has {config.partitions} partitions "
                "(YADTQ_PARTITIONS); they take over when a worker leaves."
            )
    return 0


def cmd_dlq(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        print(render(client.dead_letters(limit=args.limit)))
    return 0


def cmd_ops(config: Config, args: argparse.Namespace) -> int:
    from yadtq.core.ops import load_imports, registry

    load_imports(config.imports)
    for op in registry:
        print(op.usage.ljust(36) + op.doc)
    return 0


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from yadtq.frontends.demo import run_demo

    run_demo(config, workers=args.workers, tasks=args.tasks)
    return 0


# --- lab: load experiments (yadtq/lab/commands.py holds its parser and its commands) --------------
def add_lab_parser(sub: Any) -> None:
    from yadtq.lab.commands import add_parser

    add_parser(sub)


def cmd_lab(config: Config, args: argparse.Namespace) -> int:
    from yadtq.lab.commands import main as lab_main

    return lab_main(config, args)


# --- end of lab ------------------------------------------------------------------------------------


# --- monitoring: watch, dashboard, report, monitor, logs ------------------------------------------
def add_monitor_parsers(sub: Any) -> None:
    p = sub.add_parser("watch", help="a live terminal view of counters, workers and the newest tasks")
    p.add_argument("--once", action="store_true", help="print one view and exit")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=1.0, help="fewest seconds between redraws (default 1)")
    p = sub.add_parser("dashboard", help="serve the live dashboard with Voila on 127.0.0.1 and print its URL")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p = sub.add_parser("report", help="one self-contained HTML report with plots")
    p.add_argument("--since", help="only tasks submitted since: Unix time, ISO time, or an age like 30m, 2h, 1d")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    p = sub.add_parser("monitor", help="expose Prometheus metrics on 127.0.0.1")
    p.add_argument("--metrics-port", type=int, required=True, help="the port of /metrics")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p = sub.add_parser("logs", help="a task's log lines from every worker and attempt")
    p.add_argument("task_id", help="the task id, or a unique prefix of it")


def cmd_watch(config: Config, args: argparse.Namespace) -> int:
    from yadtq.frontends.watch import watch

    if args.interval <= 0 or (args.duration is not None and args.duration <= 0):
        raise ConfigError("--interval and --duration must be positive")
    watch(config, once=args.once, duration=args.duration, interval=args.interval)
    return 0


def cmd_dashboard(config: Config, args: argparse.Namespace) -> int:
    from yadtq.frontends.standalone import serve

    serve(config, port=args.port, duration=args.duration)
    return 0


def cmd_report(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from yadtq.client.client import Client
    from yadtq.monitoring.report import write

    since = parse_since(args.since) if args.since else None
    path = Path(args.output)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: the directory {path.parent} does not exist")
    with Client(config) as client:
        write(client, path, since)
    print(path)
    return 0


def cmd_monitor(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client
    from yadtq.monitoring.metrics import serve

    if not 0 < args.metrics_port < 65536:
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a port (1-65535)")
    with Client(config) as client:
        try:
            serve(client, args.metrics_port, args.duration)
        except OSError as exc:
            raise ConfigError(f"cannot listen on 127.0.0.1:{args.metrics_port}: {exc.strerror}") from None
    return 0


def cmd_logs(config: Config, args: argparse.Namespace) -> int:
    from yadtq.client.client import Client

    with Client(config) as client:
        task_id = client.resolve(args.task_id)
        lines = client.logs(task_id)
        for line in lines:
            at = datetime.fromtimestamp(line["at"], LOCAL).strftime("%H:%M:%S.%f")[:-3]
            print(f"{at} {line['worker']:<12} {line['level']:<7} {line['message']}")
        if not lines:
            print(f"(no log lines for {task_id}: not started yet, or kept none)", file=sys.stderr)
    return 0


def parse_since(text: str) -> float:
    """``--since`` as Unix time: a number, an ISO time (local if it has no zone), or an age (30m, 2h, 1d)."""
    import time

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(text[:-1]) * units[text[-1]]
        if text.replace(".", "", 1).isdigit():
            return float(text)
        when = datetime.fromisoformat(text)
        return (when if when.tzinfo else when.replace(tzinfo=LOCAL)).timestamp()
    except ValueError:
        raise ConfigError(f"--since {text!r}: give Unix time, an ISO time or an age like 30m") from None


# --- end of monitoring -----------------------------------------------------------------------------


COMMANDS = {name.removeprefix("cmd_"): fn for name, fn in globals().items() if name.startswith("cmd_")}
