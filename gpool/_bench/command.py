"""``gpool bench``: its options, and the run from start to report.

This process only orchestrates: it starts servers, load generators and the dispatch
measurement as child processes, reads what they say, and reports. It never runs a
gevent hub, so nothing it does competes with what is measured.

Strategies and scenarios:

- ``default``, ``pool``, ``gpool``, ``gpool-noiso``: what a server is given as
  ``spawn=`` (gevent's default, ``gevent.pool.Pool``, ``WorkerPool`` with isolation on
  and off); ``floor``: the measuring stick of :mod:`.floor` (WorkerPool's design with
  no bookkeeping), in the raw-TCP and pywsgi scenarios and dispatch.
- The gunicorn scenarios (``gunicorn-*``) run ``gunicorn -w 1`` with ``--app`` (Flask
  or a bare WSGI callable) and map three strategies onto worker classes: ``pool`` is
  the anchor (``-k gevent`` / ``-k gevent_pywsgi``, which spawn on
  ``gevent.pool.Pool``), ``gpool`` is ``GPoolWorker`` / ``GPoolPyWSGIWorker``,
  ``gpool-noiso`` the same with ``GPOOL_ISOLATE=0``. Their "vs Pool" ratios are
  against that anchor. Without gunicorn, packaging or Flask they are skipped with a
  note naming what to install.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from typing import Any, Callable

from .chart import write_chart
from .gunicorn import INSTALL_HINT, unavailable
from .load import LoadGenerator, choose_load
from .machine import cpu_ids, describe_machine
from .procs import ChildFailed, Pinning, kill_all
from .report import add_summaries, format_report, write_json
from .scenarios import (
    APPS,
    CHURN,
    GUNICORN_SCENARIOS,
    SCENARIOS,
    Progress,
    Settings,
    memory_strategies,
    run_churn,
    run_dispatch,
    run_memory,
)
from .strategies import STRATEGIES, alt_names
from .targets import evaluate

__all__ = ["configure", "run"]

# Settings that --quick changes, unless given explicitly: (full run, quick run).
_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "rounds": (5, 2),
    "duration": (5.0, 1.0),
    "warmup": (1.0, 0.0),
    "memory_connections": (10000, 1000),
    "memory_rounds": (3, 1),
    "max_idle": (1.0, 0.3),
    "dispatch_rounds": (31, 5),
    "retries": (2, 0),
}


def _number(kind: Callable[[str], Any], *, zero_ok: bool) -> Callable[[str], Any]:
    """An argparse type: *kind* (int or float), greater than 0 or, with *zero_ok*, not negative."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if zero_ok and not value >= 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
        if not zero_ok and not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


_positive_int = _number(int, zero_ok=False)
_positive = _number(float, zero_ok=False)
_not_negative = _number(float, zero_ok=True)
_not_negative_int = _number(int, zero_ok=True)


def _cpu_list(text: str) -> str:
    try:
        cpu_ids(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a taskset CPU list such as 0, 0,2 or 1-3, got {text!r}") from None
    return text


def _gpool_copy(text: str) -> str:
    if not os.path.isfile(os.path.join(text, "gpool", "__init__.py")):
        raise argparse.ArgumentTypeError(f"no gpool package in {text!r} (expected {text}/gpool/__init__.py)")
    return os.path.abspath(text)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``gpool bench`` to *parser*."""
    parser.description = (
        "Compare gpool.WorkerPool with gevent's default spawn and gevent.pool.Pool, and gpool's gunicorn "
        "workers with gunicorn's gevent workers: servers in child processes pinned to one CPU, load from wrk "
        "(or a built-in generator) on another. Prints tables, writes a JSON file and a PNG chart. "
        "Strategies: default, pool, gpool, gpool-noiso (spawn='default', gevent.pool.Pool, WorkerPool with "
        "isolation on and off) and floor (a minimal reuse pool with no bookkeeping, the measuring stick: "
        "raw-TCP, pywsgi and dispatch scenarios only). In the gunicorn-* scenarios (gunicorn -w 1, "
        "churn and keep-alive) pool is the anchor worker class (-k gevent / -k gevent_pywsgi), gpool is "
        "gpool.workers.GPoolWorker / GPoolPyWSGIWorker, gpool-noiso the same with GPOOL_ISOLATE=0; the "
        f"others do not apply there. They need gunicorn, packaging and Flask ({INSTALL_HINT}) and are "
        "skipped with a note without them."
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke run in under two minutes: fewer, shorter rounds")
    add("--scenario", action="append", choices=SCENARIOS, metavar="NAME",
        help=f"run this scenario (repeatable; default: all): {', '.join(SCENARIOS)}")  # fmt: skip
    add("--strategy", action="append", choices=STRATEGIES, metavar="NAME",
        help=f"compare this strategy (repeatable; default: all): {', '.join(STRATEGIES)}")  # fmt: skip
    add("--rounds", type=_positive_int, help="rounds of the churn scenarios (default 5; quick 2)")
    add("--duration", type=_positive, help="seconds of measured load per run (default 5; quick 1)")
    add("--warmup", type=_not_negative, help="seconds of discarded load before each run (default 1; quick 0)")
    add("--connections", type=_positive_int, default=50, help="concurrent client connections (default 50)")
    add("--app", choices=APPS, default="flask",
        help="the gunicorn scenarios' WSGI app: a Flask hello-world or a bare callable (default flask)")  # fmt: skip
    add("--memory-connections", type=_positive_int, metavar="N",
        help="connections held open in the memory scenario (default 10000; quick 1000)")  # fmt: skip
    add("--memory-rounds", type=_positive_int, metavar="N", help="rounds of the memory scenario (default 3; quick 1)")
    add("--max-idle", type=_positive, metavar="SECONDS",
        help="the WorkerPools' max_idle in the memory scenario (default 1; quick 0.3)")  # fmt: skip
    add("--tasks", type=_positive_int, default=1000, help="dispatch: tasks per batch (default 1000)")
    add("--dispatch-rounds", type=_positive_int, metavar="N", help="dispatch: rounds (default 31; quick 5)")
    add("--max-other-load", type=_not_negative, default=0.1, metavar="FRACTION",
        help="repeat a churn run when other work took more than this share of the server CPU (0.1)")  # fmt: skip
    add("--retries", type=_not_negative_int, metavar="N",
        help="how often to run a noisy run again (default 2; quick 0)")  # fmt: skip
    add("--load", choices=("auto", "wrk", "builtin"), default="auto",
        help="load generator: wrk, the built-in one, or wrk when installed (default)")  # fmt: skip
    add("--json", metavar="PATH", help="write every figure here as JSON (default: no file, the report only)")
    add("--png", metavar="PATH", help="draw the chart here, needs gpool[bench] (default: no chart)")
    add("--server-cpu", type=_cpu_list, default="0", metavar="CPUS", help="taskset CPU list for servers (default 0)")
    add("--client-cpu", type=_cpu_list, default="1", metavar="CPUS", help="taskset CPU list for the load (default 1)")
    add("--nice", type=int, default=-10, metavar="N",
        help="niceness of servers and load where permitted (root); default -10, 0: unchanged")  # fmt: skip
    add("--alt", type=_gpool_copy, metavar="PATH",
        help="also run the WorkerPool strategies of a modified gpool copy in PATH/gpool, as NAME@alt")  # fmt: skip
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> Settings:
    resolved = {
        key: getattr(args, key) if getattr(args, key) is not None else pair[1 if args.quick else 0]
        for key, pair in _DEFAULTS.items()
    }
    chosen = set(args.scenario or SCENARIOS)
    if "latency" in chosen and not chosen & {"tcp-churn", "wsgi-churn"}:
        chosen.add("tcp-churn")  # latency is measured during churn
    strategies = list(args.strategy or STRATEGIES)
    strategies = sorted(set(strategies), key=STRATEGIES.index)
    if args.alt:
        strategies += alt_names()
    return Settings(
        scenarios=tuple(name for name in SCENARIOS if name in chosen),
        strategies=tuple(strategies),
        connections=args.connections,
        tasks=args.tasks,
        alt=args.alt,
        quick=args.quick,
        max_other_load=args.max_other_load,
        app=args.app,
        **resolved,
    )


def _on_sigterm(_signo: int, _frame: Any) -> None:
    raise SystemExit(143)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every run went well (targets are not checked here)."""
    settings = settings_from(args)
    pinning = Pinning(args.server_cpu, args.client_cpu, args.nice)
    load_kind, load_note = choose_load(args.load)
    load = LoadGenerator(load_kind, pinning, settings.connections)
    for note in (pinning.note, load_note):
        if note:
            Progress.line(f"note: {note}")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    skipped: dict[str, str] = {}
    wanted_gunicorn = [name for name in settings.scenarios if name in GUNICORN_SCENARIOS]
    why_not = unavailable(settings.app) if wanted_gunicorn else None
    for name in wanted_gunicorn:
        if why_not:
            skipped[name] = why_not
        elif not CHURN[name].strategies(settings.strategies):
            skipped[name] = "none of the chosen strategies applies (pool, gpool, gpool-noiso do)"
    if "memory" in settings.scenarios and not memory_strategies(settings.strategies):
        skipped["memory"] = "none of the chosen strategies applies (the floor never culls)"
    if why_not:
        Progress.line(f"note: skipping the gunicorn scenarios: {why_not}")
    for name, why in skipped.items():
        if why != why_not:
            Progress.line(f"note: skipping {name}: {why}")
    settings = replace(settings, scenarios=tuple(name for name in settings.scenarios if name not in skipped))
    steps = sum(
        settings.rounds * len(CHURN[name].strategies(settings.strategies)) if name in CHURN else
        1 if name == "dispatch" else
        settings.memory_rounds * len(memory_strategies(settings.strategies)) if name == "memory" else 0
        for name in settings.scenarios
    )  # fmt: skip
    progress = Progress(steps)
    report: dict[str, Any] = {
        "machine": describe_machine(settings.alt),
        "settings": {**vars(settings), "connections": settings.connections},
        "pinning": pinning.describe(),
        "load": load_kind,
        "argv": sys.argv,
        "scenarios": {},
        "skipped": skipped,
    }
    Progress.line(
        f"gpool bench: {', '.join(settings.scenarios)}; strategies {', '.join(settings.strategies)}; "
        f"{pinning.describe()}; load {load_kind}"
    )
    started = time.monotonic()
    problems: list[str] = []
    try:
        for name in settings.scenarios:
            if name in CHURN:
                result = run_churn(name, settings, load, pinning, progress)
                problems += result.pop("problems")
            elif name == "dispatch":
                result = run_dispatch(settings, pinning, progress)
            elif name == "memory":
                result = run_memory(settings, pinning, progress)
            else:
                continue  # latency: reported from the churn runs
            report["scenarios"][name] = result
    except ChildFailed as exc:
        problems.append(f"aborted: {exc}")
        Progress.line(f"gpool bench: {exc}")
    except KeyboardInterrupt:
        Progress.line("gpool bench: interrupted")
        return 130
    finally:
        kill_all()
    report["elapsed_s"] = time.monotonic() - started
    report["problems"] = problems
    add_summaries(report["scenarios"])
    report["targets"] = evaluate(report["scenarios"])
    print(format_report(report), flush=True)
    if args.json:
        write_json(report, args.json)
        Progress.line(f"wrote {os.path.abspath(args.json)}")
    if args.png:
        why_not = write_chart(report, args.png)
        if why_not is None:
            Progress.line(f"wrote {os.path.abspath(args.png)}")
        else:
            Progress.line(f"note: no chart: {why_not}")
    if not args.json and not args.png:
        Progress.line("no files written (--json PATH and --png PATH keep the figures and the chart)")
    return 1 if problems else 0
