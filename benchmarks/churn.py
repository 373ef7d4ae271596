#!/usr/bin/env python
"""Connection-churn and dispatch benchmark: gevent spawn vs Pool vs gpool.WorkerPool.

Two scenarios, each comparing four ways of running a task per connection:

  default      StreamServer(..., spawn='default')        one new Greenlet per task
  pool         spawn=gevent.pool.Pool(10000)              new Greenlet + Group/semaphore
  gpool        spawn=WorkerPool(10000)                    reused worker, isolation on
  gpool-noiso  spawn=WorkerPool(10000, isolate=False)     reused worker, isolation off

1. churn: a minimal raw-TCP HTTP responder on ``gevent.server.StreamServer`` (read
   the request to the blank line, send a fixed ``200 OK`` with Content-Length and
   ``Connection: close``, close), one subprocess per server pinned to CPU 0 with
   ``taskset``, driven by ``wrk -t1 -c50 -H 'Connection: close'`` pinned to CPU 1.
   Each round runs every strategy once, in an order that rotates from round to round;
   each run starts a fresh server, warms it with a short wrk run, measures, and stops
   the server. Reported: median Requests/sec per strategy and ratios, plus the
   server's CPU time (user + system, from getrusage) per answered request.

2. dispatch: in one process (pinned to CPU 0), a hub callback calls ``spawn`` N
   times in a loop, as a server's accept callback does; each task blocks once
   (``gevent.sleep(0)``) and ends. Timed from the first spawn until every task has
   finished and the pool is empty again (so each strategy's end-of-task bookkeeping
   is included), divided by N. Pools are warmed with a full batch first, so a
   WorkerPool has N idle workers. Strategies alternate batch by batch; medians
   over rounds. Run a second time with tasks that do not block at all, which
   leaves the pool's own dispatch cost (a handler that finds its request already
   buffered, the usual case in scenario 1, never blocks either).

Ratios are given two ways: ratio of the medians, and the median of the per-round
ratios ("paired", less sensitive to slow phases of a noisy machine).

Usage::

    python benchmarks/churn.py [--rounds N] [--duration S] [--quick] [--json PATH]
    python benchmarks/churn.py --alt /tmp/gpool-copy   # A/B a modified gpool copy too

Only the standard library, gevent and gpool are used; wrk and taskset must be on PATH.
The parent process never imports gevent: it only starts, measures and stops children.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

STRATEGIES: list[tuple[str, str]] = [
    ("default", "spawn='default'"),
    ("pool", "gevent.pool.Pool(10000)"),
    ("gpool", "WorkerPool(10000)"),
    ("gpool-noiso", "WorkerPool(10000, isolate=False)"),
]
LABELS = dict(STRATEGIES)
NAMES = [name for name, _ in STRATEGIES]
POOL_SIZE = 10000
# --alt PATH: also run both WorkerPool strategies from the gpool package in PATH (an
# experimental copy), A/B against the installed one in the same alternating run.
ALT_PATH: str | None = None


def enable_alt(path: str) -> None:
    global ALT_PATH
    ALT_PATH = os.path.abspath(path)
    if not os.path.isfile(os.path.join(ALT_PATH, "gpool", "__init__.py")):
        raise SystemExit(f"--alt: no gpool package in {ALT_PATH}")
    for name in ("gpool", "gpool-noiso"):
        NAMES.append(name + "@alt")
        LABELS[name + "@alt"] = LABELS[name] + " [alt]"


def _import_alt() -> Any:
    """The gpool package in ALT_PATH, imported as ``gpool_alt`` next to the real one."""
    import importlib.util

    assert ALT_PATH is not None
    if "gpool_alt" in sys.modules:
        return sys.modules["gpool_alt"]
    init = os.path.join(ALT_PATH, "gpool", "__init__.py")
    spec = importlib.util.spec_from_file_location("gpool_alt", init, submodule_search_locations=[os.path.dirname(init)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpool_alt"] = module
    spec.loader.exec_module(module)
    return module


BODY = b"Hello, World!\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + BODY
)

# Socket errors wrk may report on a healthy Connection: close run are rare; more than
# this fraction of the requests is flagged.
ERROR_TOLERANCE = 0.001


def rotated(names: list[str], round_no: int) -> list[str]:
    k = round_no % len(names)
    return names[k:] + names[:k]


def _pdeathsig() -> None:
    """Ask Linux to SIGKILL this process when its parent dies. Survives exec, so it is
    set in every child before taskset runs; best effort, Linux only."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _die_with_parent() -> None:
    """Belt and braces in the children: the server also exits at EOF on its stdin."""
    _pdeathsig()
    if os.getppid() == 1:  # parent already gone
        os._exit(1)


def _make_spawn(strategy: str, **options: Any) -> Any:
    if strategy == "default":
        return "default"
    if strategy == "pool":
        from gevent.pool import Pool

        return Pool(POOL_SIZE)
    if strategy.endswith("@alt"):
        WorkerPool = _import_alt().WorkerPool
        strategy = strategy[: -len("@alt")]
    else:
        from gpool import WorkerPool

    if strategy == "gpool":
        return WorkerPool(POOL_SIZE, **options)
    if strategy == "gpool-noiso":
        return WorkerPool(POOL_SIZE, isolate=False, **options)
    raise ValueError(f"unknown strategy {strategy!r}")


# -- child: the server ------------------------------------------------------------------


def serve(strategy: str) -> None:
    _die_with_parent()
    import gevent
    from gevent.event import Event
    from gevent.server import StreamServer

    response = RESPONSE
    counts = {"handled": 0, "incomplete": 0, "oserror": 0}

    def handle(sock: Any, _address: Any) -> None:
        # Errors are counted here, not raised, so no strategy pays for printing
        # tracebacks (gevent) or logging (gpool) on a client that hung up.
        try:
            data = sock.recv(4096)
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    counts["incomplete"] += 1
                    return
                data += chunk
            sock.sendall(response)
            counts["handled"] += 1
        except OSError:
            counts["oserror"] += 1

    spawn = _make_spawn(strategy)
    server = StreamServer(("127.0.0.1", 0), handle, spawn=spawn)
    server.start()

    hub = gevent.get_hub()
    stop = Event()
    stdin_fd = sys.stdin.fileno()

    def on_stdin() -> None:
        data = os.read(stdin_fd, 4096)
        if not data:  # EOF: the parent wants us gone
            stop.set()
            return
        for _ in range(data.count(b"\n")):  # "MARK": report CPU time used so far
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"CPU {usage.ru_utime!r} {usage.ru_stime!r} {counts['handled']}", flush=True)

    watcher = hub.loop.io(stdin_fd, 1)
    watcher.start(on_stdin)
    print(f"PORT {server.server_port}", flush=True)
    stop.wait()
    watcher.stop()
    server.stop(timeout=1)
    report: dict[str, Any] = {"strategy": strategy, **counts}
    if hasattr(spawn, "stats"):
        report["pool_stats"] = vars(spawn.stats())
    print("STATS " + json.dumps(report), flush=True)


# -- child: in-process dispatch ------------------------------------------------------------


DISPATCH_MODES = {
    # The scenario proper: every task blocks once, as a connection handler waits for
    # its socket, so every strategy also pays a suspend/resume per task.
    "block": "each task blocks once (gevent.sleep(0))",
    # The same without the block: what the pool's own dispatch costs, as when a
    # handler finds its request already in the socket buffer and never waits.
    "noblock": "tasks do not block",
}


def dispatch(n: int, rounds: int) -> None:
    _die_with_parent()
    import gc
    from time import perf_counter

    import gevent
    from gevent.event import Event

    if n > POOL_SIZE:
        raise SystemExit(f"--tasks must not exceed {POOL_SIZE}")
    hub = gevent.get_hub()
    sleep = gevent.sleep
    # max_idle is raised so no worker is culled between rounds.
    pools: dict[str, Any] = {name: _make_spawn(name, max_idle=600) for name in NAMES if name != "default"}
    pools["default"] = None

    def batch(name: str, block: bool) -> tuple[float, float]:
        """Spawn n tasks from one hub callback; return (us/task until every task has
        finished and the pool is empty again, us/task of the spawn calls alone)."""
        pool = pools[name]
        spawn = gevent.spawn if pool is None else pool.spawn
        left = n
        done = Event()
        marks: dict[str, float] = {}

        def mark_end() -> None:
            # Runs after every callback queued before it (gevent.pool's link
            # notifications among them); re-queued until the pool is empty.
            if pool is None or len(pool) == 0:
                marks["end"] = perf_counter()
                done.set()
            else:
                hub.loop.run_callback(mark_end)

        def task() -> None:
            nonlocal left
            if block:
                sleep(0)
            left -= 1
            if not left:
                hub.loop.run_callback(mark_end)

        def launcher() -> None:
            marks["start"] = perf_counter()
            for _ in range(n):
                spawn(task)
            marks["spawned"] = perf_counter()

        gc.collect()
        hub.loop.run_callback(launcher)
        done.wait()
        if pool is not None:
            pool.join()
        sleep(0)
        return (marks["end"] - marks["start"]) / n * 1e6, (marks["spawned"] - marks["start"]) / n * 1e6

    out: dict[str, Any] = {}
    for mode in DISPATCH_MODES:
        block = mode == "block"
        for name in NAMES:  # warm every strategy: the WorkerPools fill their ready lists
            batch(name, block)
        total: dict[str, list[float]] = {name: [] for name in NAMES}
        loop_only: dict[str, list[float]] = {name: [] for name in NAMES}
        for r in range(rounds):
            for name in rotated(NAMES, r):
                batch(name, block)  # warm-up batch, discarded
                us, spawned = batch(name, block)
                total[name].append(us)
                loop_only[name].append(spawned)
        out[mode] = {"us_per_task": total, "spawn_loop_us_per_task": loop_only}
    out["pool_stats"] = {name: vars(pool.stats()) for name, pool in pools.items() if hasattr(pool, "stats")}
    print(json.dumps(out), flush=True)


# -- parent ------------------------------------------------------------------------------

_live: set[subprocess.Popen[bytes]] = set()


def _kill_all() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _live.discard(proc)


def _on_sigterm(_signo: int, _frame: Any) -> None:
    raise SystemExit(143)


class Server:
    """A server child pinned to a CPU; always stopped by ``stop()`` or ``_kill_all``."""

    def __init__(self, strategy: str, cpu: str) -> None:
        self.strategy = strategy
        # Closed in stop() or kill(), which every path out of a run goes through.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        cmd = ["taskset", "-c", cpu, sys.executable, os.path.abspath(__file__), "--_serve", strategy]
        if ALT_PATH:
            cmd += ["--alt", ALT_PATH]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, preexec_fn=_pdeathsig
        )
        _live.add(self.proc)
        try:
            self.port = self._read_port(timeout=15)
        except BaseException:
            self.kill()
            raise

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.strategy}: server did not report its port in {timeout}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"{self.strategy}: server exited early: {self._stderr_text()}")
            if line.startswith("PORT "):
                return int(line.split()[1])

    def mark(self) -> tuple[float, int]:
        """The server's CPU seconds (user + system) so far and the requests it answered."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"MARK\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("CPU "):
            raise RuntimeError(f"{self.strategy}: bad answer to MARK: {line!r} {self._stderr_text()}")
        _, utime, stime, handled = line.split()
        return float(utime) + float(stime), int(handled)

    def _stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> dict[str, Any]:
        """Close the child's stdin (it stops and prints its counters); kill if slow."""
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.strategy}: server did not stop; killed") from None
        except BaseException:
            self.kill()
            raise
        _live.discard(self.proc)
        stats: dict[str, Any] = {}
        for line in out.decode().splitlines():
            if line.startswith("STATS "):
                stats = json.loads(line[6:])
        err = self._stderr_text().strip()
        if err:
            stats["stderr_tail"] = err[-2000:]
        if self.proc.returncode != 0:
            stats["returncode"] = self.proc.returncode
        self.stderr.close()
        return stats

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        finally:
            _live.discard(self.proc)
            self.stderr.close()


_WRK_REQS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_LAT = re.compile(r"Latency\s+([\d.]+)(\w+)")


def run_wrk(port: int, duration: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", args.client_cpu, "wrk", f"-t{args.threads}", f"-c{args.connections}",
        f"-d{duration}s", "-H", "Connection: close", f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, preexec_fn=_pdeathsig)
    text = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or text}")
    rps = _WRK_RPS.search(text)
    reqs = _WRK_REQS.search(text)
    if not rps or not reqs:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    result: dict[str, Any] = {"rps": float(rps.group(1)), "requests": int(reqs.group(1))}
    err = _WRK_ERR.search(text)
    errors = dict(zip(("connect", "read", "write", "timeout"), map(int, err.groups()))) if err else {}
    result["socket_errors"] = errors
    non2xx = _WRK_NON2XX.search(text)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    lat = _WRK_LAT.search(text)
    if lat:
        value, unit = float(lat.group(1)), lat.group(2)
        result["latency_avg_ms"] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit, float("nan"))
    return result


def churn(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
    problems: list[str] = []
    total = args.rounds * len(NAMES)
    i = 0
    for r in range(args.rounds):
        for name in rotated(NAMES, r):
            i += 1
            server = Server(name, args.server_cpu)
            try:
                if args.warmup > 0:
                    run_wrk(server.port, args.warmup, args)
                cpu0, handled0 = server.mark()
                wall0 = time.monotonic()
                result = run_wrk(server.port, args.duration, args)
                wall1 = time.monotonic()
                cpu1, handled1 = server.mark()
            except BaseException:
                server.kill()
                raise
            result["server"] = server.stop()
            # Server CPU per answered request over the measured run: what the strategy
            # costs, whether or not the server kept its CPU busy (a slowed or starved wrk
            # lowers req/s, not this; a slowed CPU raises both).
            result["server_cpu_s"] = cpu1 - cpu0
            result["server_handled"] = handled1 - handled0
            result["server_cpu_us_per_req"] = (cpu1 - cpu0) / max(handled1 - handled0, 1) * 1e6
            result["server_cpu_util"] = (cpu1 - cpu0) / (wall1 - wall0)
            result["round"] = r
            runs[name].append(result)
            errs = sum(result["socket_errors"].values())
            note = ""
            if errs > ERROR_TOLERANCE * max(result["requests"], 1):
                note += f"  socket errors {result['socket_errors']}"
                problems.append(f"round {r} {name}: socket errors {result['socket_errors']}")
            if result["non_2xx"]:
                note += f"  non-2xx {result['non_2xx']}"
                problems.append(f"round {r} {name}: {result['non_2xx']} non-2xx responses")
            if result["requests"] <= 0:
                problems.append(f"round {r} {name}: no requests")
            srv = result["server"]
            if srv.get("returncode") or srv.get("stderr_tail"):
                problems.append(
                    f"round {r} {name}: server rc={srv.get('returncode')} stderr={srv.get('stderr_tail', '')[:300]!r}"
                )
            if result["server_handled"] < result["requests"]:
                problems.append(
                    f"round {r} {name}: server answered {result['server_handled']} < wrk's {result['requests']}"
                )
            print(
                f"  [{i:2d}/{total}] round {r + 1} {name:<12} {result['rps']:10.1f} req/s"
                f"  ({result['requests']} req, lat {result.get('latency_avg_ms', float('nan')):.2f} ms, server "
                f"{result['server_cpu_us_per_req']:.1f} CPU-us/req, {result['server_cpu_util']:.0%} busy){note}",
                file=sys.stderr,
                flush=True,
            )
    for name in NAMES:
        if not runs[name] or min(run["requests"] for run in runs[name]) <= 0:
            problems.append(f"{name}: a run served no requests")
    return {"runs": runs, "problems": problems}


def run_dispatch(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", args.server_cpu, sys.executable, os.path.abspath(__file__),
        "--_dispatch", "--tasks", str(args.tasks), "--dispatch-rounds", str(args.dispatch_rounds),
    ]  # fmt: skip
    if ALT_PATH:
        cmd += ["--alt", ALT_PATH]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_pdeathsig)
    _live.add(proc)
    try:
        out, err = proc.communicate(timeout=300)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        _live.discard(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"dispatch child failed ({proc.returncode}): {err.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def paired_ratios(values: dict[str, list[float]], name: str, ref: str) -> float:
    return statistics.median(a / b for a, b in zip(values[name], values[ref]))


def print_dispatch(d: dict[str, Any], what: str, args: argparse.Namespace) -> None:
    us = d["us_per_task"]
    loop_us = d["spawn_loop_us_per_task"]
    med = {name: statistics.median(us[name]) for name in NAMES}
    summary = {}
    print()
    print(f"Dispatch from the hub, {what}: {args.tasks} tasks per batch, median of {args.dispatch_rounds} rounds")
    print(f"{'strategy':<40}{'us/task':>9}{'min':>8}{'max':>8}{'vs Pool':>9}{'vs default':>11}"
          f"{'paired/Pool':>12}{'spawn loop us':>15}")  # fmt: skip
    for name in NAMES:
        summary[name] = {
            "median_us_per_task": med[name],
            "min_us": min(us[name]),
            "max_us": max(us[name]),
            "ratio_vs_pool": med[name] / med["pool"],
            "ratio_vs_default": med[name] / med["default"],
            "paired_ratio_vs_pool": paired_ratios(us, name, "pool"),
            "paired_ratio_vs_default": paired_ratios(us, name, "default"),
            "median_spawn_loop_us": statistics.median(loop_us[name]),
        }
        s = summary[name]
        print(f"{LABELS[name]:<40}{s['median_us_per_task']:>9.2f}{s['min_us']:>8.2f}{s['max_us']:>8.2f}"
              f"{s['ratio_vs_pool']:>8.2f}x{s['ratio_vs_default']:>10.2f}x{s['paired_ratio_vs_pool']:>11.2f}x"
              f"{s['median_spawn_loop_us']:>15.2f}")  # fmt: skip
    d["summary"] = summary
    if ALT_PATH:
        print_alt_ratios("dispatch us/task (lower is better)", us)


def print_alt_ratios(what: str, values: dict[str, list[float]]) -> None:
    pairs = ", ".join(
        f"{name}: {statistics.median(values[name + '@alt']) / statistics.median(values[name]):.3f}x "
        f"(paired {paired_ratios(values, name + '@alt', name):.3f}x)"
        for name in ("gpool", "gpool-noiso")
    )
    print(f"[alt] / installed, {what}: {pairs}")


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = subprocess.run(
        [sys.executable, "-c", "import gevent, greenlet, gpool; print(gevent.__version__, greenlet.__version__, "
         "gpool.__version__, gevent.get_hub().loop.__class__.__module__, gpool.__file__)"],
        capture_output=True, text=True, cwd=tempfile.gettempdir(),
    ).stdout.split()  # fmt: skip
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if len(versions) == 5:
        info.update(gevent=versions[0], greenlet=versions[1], gpool=versions[2], loop=versions[3])
        # Which gpool source was measured: its checkout's commit, and whether gpool/
        # had uncommitted changes (other people edit the package while benchmarks run).
        src = os.path.dirname(os.path.dirname(versions[4]))
        info["gpool_source"] = src
        git = ["git", "-C", src]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:
            info["gpool_commit"] = head.stdout.strip()
            dirty = subprocess.run([*git, "status", "--porcelain", "--", "gpool"], capture_output=True, text=True)
            info["gpool_dirty"] = bool(dirty.stdout.strip())
    if ALT_PATH:
        info["alt_gpool"] = ALT_PATH
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="churn rounds (each runs every strategy once)")
    p.add_argument("--duration", type=int, default=5, help="seconds of measured wrk load per run (whole seconds)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per server (discarded; 0: none)")
    p.add_argument("--quick", action="store_true", help="3 rounds x 2 s, fewer dispatch rounds (< 60 s)")
    p.add_argument("--json", metavar="PATH", help="also write every number to PATH as JSON")
    p.add_argument("--only", choices=("churn", "dispatch"), help="run one scenario only")
    p.add_argument("--connections", type=int, default=50, help="wrk -c")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for servers and dispatch")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for wrk")
    p.add_argument("--tasks", type=int, default=1000, help="dispatch: tasks per batch")
    p.add_argument("--dispatch-rounds", type=int, default=41, help="dispatch: rounds")
    p.add_argument(
        "--alt",
        metavar="PATH",
        help="also run the WorkerPool strategies from the gpool package in PATH (a modified copy), labelled [alt]",
    )
    p.add_argument("--_serve", help=argparse.SUPPRESS)
    p.add_argument("--_dispatch", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.alt:
        enable_alt(args.alt)

    if args._serve:
        serve(args._serve)
        return 0
    if args._dispatch:
        dispatch(args.tasks, args.dispatch_rounds)
        return 0

    if args.quick:
        args.rounds, args.duration, args.warmup, args.dispatch_rounds = 3, 2, 1, 15
    for tool in ("taskset", "wrk"):
        if (args.only != "dispatch" or tool == "taskset") and shutil.which(tool) is None:
            p.error(f"{tool} not found on PATH")

    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_kill_all)
    report: dict[str, Any] = {"machine": machine(), "settings": {
        k: getattr(args, k) for k in ("rounds", "duration", "warmup", "connections", "threads", "server_cpu",
                                      "client_cpu", "tasks", "dispatch_rounds", "quick")
    }}  # fmt: skip
    m = report["machine"]
    print(
        f"# {m['cpu_model']}, nproc={m['nproc']}, Python {m['python']}, gevent {m.get('gevent')}, "
        f"greenlet {m.get('greenlet')}, gpool {m.get('gpool')} ({m.get('gpool_commit', '?')}"
        f"{', modified' if m.get('gpool_dirty') else ''}), loop {m.get('loop')}"
    )
    started = time.monotonic()
    try:
        if args.only != "dispatch":
            print(
                f"# churn: {args.rounds} rounds x {len(NAMES)} strategies, wrk -t{args.threads} "
                f"-c{args.connections} -d{args.duration:g}s (+{args.warmup:g}s warm-up), server CPU "
                f"{args.server_cpu}, wrk CPU {args.client_cpu}",
                file=sys.stderr,
                flush=True,
            )
            report["churn"] = churn(args)
        if args.only != "churn":
            print(f"# dispatch: {len(DISPATCH_MODES)} modes x {args.dispatch_rounds} rounds x {args.tasks} tasks",
                  file=sys.stderr, flush=True)  # fmt: skip
            report["dispatch"] = run_dispatch(args)
    finally:
        _kill_all()
    report["elapsed_s"] = round(time.monotonic() - started, 1)

    ok = True
    if "churn" in report:
        runs = report["churn"]["runs"]
        rps = {name: [run["rps"] for run in runs[name]] for name in NAMES}
        cpu = {name: [run["server_cpu_us_per_req"] for run in runs[name]] for name in NAMES}
        util = {name: [run["server_cpu_util"] for run in runs[name]] for name in NAMES}
        med = {name: statistics.median(rps[name]) for name in NAMES}
        cmed = {name: statistics.median(cpu[name]) for name in NAMES}
        summary = {}
        print()
        print(f"Connection churn: wrk Requests/sec, median of {args.rounds} rounds ({args.duration} s each)")
        print(f"{'strategy':<40}{'median':>9}{'min':>9}{'max':>9}{'vs Pool':>9}{'vs default':>11}"
              f"{'paired/Pool':>12}{'paired/dflt':>12}")  # fmt: skip
        for name in NAMES:
            summary[name] = {
                "median_rps": med[name],
                "min_rps": min(rps[name]),
                "max_rps": max(rps[name]),
                "ratio_vs_pool": med[name] / med["pool"],
                "ratio_vs_default": med[name] / med["default"],
                "paired_ratio_vs_pool": paired_ratios(rps, name, "pool"),
                "paired_ratio_vs_default": paired_ratios(rps, name, "default"),
                "median_server_cpu_us_per_req": cmed[name],
                "min_server_cpu_us_per_req": min(cpu[name]),
                "max_server_cpu_us_per_req": max(cpu[name]),
                "median_server_cpu_util": statistics.median(util[name]),
                # CPU efficiency as a throughput ratio: requests per server CPU-second.
                "cpu_ratio_vs_pool": cmed["pool"] / cmed[name],
                "cpu_ratio_vs_default": cmed["default"] / cmed[name],
            }
            s = summary[name]
            print(f"{LABELS[name]:<40}{s['median_rps']:>9.0f}{s['min_rps']:>9.0f}{s['max_rps']:>9.0f}"
                  f"{s['ratio_vs_pool']:>8.2f}x{s['ratio_vs_default']:>10.2f}x"
                  f"{s['paired_ratio_vs_pool']:>11.2f}x{s['paired_ratio_vs_default']:>11.2f}x")  # fmt: skip
        print()
        print("Server CPU (user+sys) per answered request over the same runs; 'vs' columns are requests")
        print("per server CPU-second relative to the reference (higher is better)")
        print(f"{'strategy':<40}{'CPU-us/req':>11}{'min':>8}{'max':>8}{'vs Pool':>9}{'vs default':>11}{'CPU busy':>10}")
        for name in NAMES:
            s = summary[name]
            print(f"{LABELS[name]:<40}{s['median_server_cpu_us_per_req']:>11.1f}{s['min_server_cpu_us_per_req']:>8.1f}"
                  f"{s['max_server_cpu_us_per_req']:>8.1f}{s['cpu_ratio_vs_pool']:>8.2f}x{s['cpu_ratio_vs_default']:>10.2f}x"
                  f"{s['median_server_cpu_util']:>10.0%}")  # fmt: skip
        report["churn"]["summary"] = summary
        if ALT_PATH:
            print_alt_ratios("churn req/s (higher is better)", rps)
            print_alt_ratios("churn server CPU-us/req (lower is better)", cpu)
        problems = report["churn"]["problems"]
        if problems:
            ok = False
            print("PROBLEMS:")
            for problem in problems:
                print("  " + problem)
        else:
            print("checks: every run served requests; no socket errors above "
                  f"{ERROR_TOLERANCE:.1%} of requests; no non-2xx; servers answered >= wrk's count")  # fmt: skip
    if "dispatch" in report:
        for mode, what in DISPATCH_MODES.items():
            print_dispatch(report["dispatch"][mode], what, args)
        print("(us/task: first spawn to last task finished and pool empty, divided by the tasks. 'spawn loop':")
        print(" the spawn calls alone; WorkerPool runs each task up to its first block inside spawn while")
        print(" gevent only schedules the start, so that column does not compare strategies.)")
    print(f"\nelapsed {report['elapsed_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # children are already gone (main's finally)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
