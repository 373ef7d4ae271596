#!/usr/bin/env python
"""gpool's standalone WSGI server against gevent's, the HTTP server ``gpool bench`` leaves out.

    .venv/bin/python benchmarks/http_servers.py [--rounds N] [--duration S]
        [--connections C] [--app {flask,bare}] [--json PATH]

The gunicorn worker classes are measured by ``gpool bench`` (its ``gunicorn-*``
scenarios); this script keeps the one group that the benchmark does not cover, an
anchor and the gpool server that stands in for it, plus that gpool server with
isolation off (``isolate=False``), all run under the same conditions:

- ``wsgiserver``: ``gevent.pywsgi.WSGIServer(spawn=gevent.pool.Pool(1000))`` /
  ``gpool.wsgi.WSGIServer(spawn=gpool.WorkerPool(1000))``, each in its own process
  that calls ``gevent.monkey.patch_all()`` first.

The application, the isolation probe and the CPU reading are ``gpool bench``'s own
(:mod:`gpool._bench.apps`, :func:`gpool._bench.machine.process_cpu_seconds`).

Two scenarios: ``keepalive`` (``wrk -t1 -cC``) and ``churn`` (the same with
``Connection: close``). Every run starts a fresh server pinned to the server CPU,
waits until it answers, checks whether state set by one request is seen by the next
on the same connection (the isolation probe), warms it up, then runs wrk (pinned to
the client CPU) and reads the server's CPU time (user and system, from
``/proc/PID/stat``) before and after.
Within a round the servers of a group run back to back, in an order that reverses
from one round (and scenario) to the next, so drift hits every server alike.

The figures are medians over the rounds. ``/anchor`` is the ratio of medians (gpool / anchor);
``paired`` is the median of the round-by-round ratios (steadier on a noisy machine).
The isolation cost is the gpool server's CPU per request with isolation on minus off.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from typing import IO, Any, Callable, Iterable, Sequence

from gpool._bench.apps import APPS, BODY, create_app, http_get, state_leaks
from gpool._bench.machine import process_cpu_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
BACKLOG = 2048  # gunicorn's default, used for the standalone servers too
POOL_SIZE = 1000
# Another process taking more than this share of the server CPU during a run is noise
# worth a warning.
MAX_OTHER_LOAD = 0.10

# -- the servers ------------------------------------------------------------------------

# The standalone servers: a process of their own that patches before anything else.
STANDALONE = """\
from gevent import monkey
monkey.patch_all()
import sys
sys.path.insert(0, {here!r})
import http_servers
http_servers.serve_standalone(sys.argv[1], sys.argv[2])
"""


def serve_standalone(server: str, app_kind: str) -> None:
    """Run one standalone server on 127.0.0.1, an ephemeral port, and print the port.

    *server* is ``gevent`` (``gevent.pywsgi.WSGIServer`` on ``gevent.pool.Pool``),
    ``gpool`` (``gpool.wsgi.WSGIServer`` on ``WorkerPool``) or ``gpool-noiso`` (the
    same with ``isolate=False``). The listener has ``TCP_NODELAY``, which accepted
    sockets inherit, as gunicorn sets on its own listeners. No access log.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    app = create_app(app_kind)
    if server == "gevent":
        from gevent.pool import Pool
        from gevent.pywsgi import WSGIServer as GeventWSGIServer

        wsgi: Any = GeventWSGIServer(listener, app, spawn=Pool(POOL_SIZE), log=None)
    else:
        from gpool import WorkerPool
        from gpool.wsgi import WSGIServer

        wsgi = WSGIServer(listener, app, spawn=WorkerPool(POOL_SIZE, isolate=server == "gpool"), log=None)
    print(listener.getsockname()[1], flush=True)
    wsgi.serve_forever()  # until SIGTERM (default action: exit)


# -- what is run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One server under test."""

    label: str  # as printed
    role: str  # anchor | gpool | gpool-noiso
    standalone: str  # serve_standalone's *server*


ROLES = ("anchor", "gpool", "gpool-noiso")

GROUPS: dict[str, tuple[Variant, ...]] = {
    "wsgiserver": (
        Variant("gevent.pywsgi.WSGIServer + Pool(1000)", "anchor", "gevent"),
        Variant("gpool.wsgi.WSGIServer + WorkerPool(1000)", "gpool", "gpool"),
        Variant("  ... WorkerPool(1000, isolate=False)", "gpool-noiso", "gpool-noiso"),
    ),
}

SCENARIOS = {"keepalive": "keep-alive", "churn": "churn (Connection: close)"}


# -- processes --------------------------------------------------------------------------


class RunFailed(RuntimeError):
    """A server did not start, answer or stop as it should."""


LIVE: set[Server] = set()  # servers started and not yet stopped


def says_connection_close(port: int) -> bool:
    """Whether the server's answer to a ``Connection: close`` request says so itself.

    When it does not (gevent's pywsgi, and so every pywsgi-based server here, leaves
    the header out and just closes), wrk takes the connection for a keep-alive one,
    sends its next request, reads end-of-file and counts a read error: one per
    request in the churn scenario, with every request still answered.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower().split("\r\n")
    if not head[0].startswith("http/1.1 200"):
        raise RunFailed(f"a Connection: close request was answered {head[0]!r}")
    return any(line.replace(" ", "") == "connection:close" for line in head[1:])


class Server:
    """One standalone server process under test."""

    def __init__(self, variant: Variant, app: str, cpu_argv: Callable[[list[str]], list[str]], preexec: Any) -> None:
        self.variant = variant
        self.app = app
        self._cpu_argv = cpu_argv
        self._preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid = 0  # the process whose CPU is measured
        self._stderr: IO[bytes] | None = None
        self._said = ""

    def _env(self) -> dict[str, str]:
        # No GPOOL_* setting of the caller's may reach one server and not another.
        return {k: v for k, v in os.environ.items() if not k.startswith("GPOOL_")}

    def _popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        return subprocess.Popen(
            self._cpu_argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self._env(),
            preexec_fn=self._preexec,
        )

    def stderr_text(self, limit: int = 1500) -> str:
        """What the server wrote to stderr (kept when it is stopped)."""
        if self._stderr is not None:
            self._stderr.seek(0)
            self._said = self._stderr.read().decode(errors="replace").strip()
        return self._said[-limit:]

    def start(self, timeout: float = 30.0) -> None:
        argv = [sys.executable, "-c", STANDALONE.format(here=HERE), self.variant.standalone, self.app]
        self.proc = self._popen(argv)
        self.pid = self.proc.pid  # taskset execs the server in place
        assert self.proc.stdout is not None
        # The child prints its port once listening.
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RunFailed(f"{self.variant.label} did not start: {self.stderr_text()}")
        self.port = int(line)
        self._wait_answering(timeout)

    def _wait_answering(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunFailed(
                    f"{self.variant.label} exited (status {self.proc.returncode}) before answering: "
                    f"{self.stderr_text()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = http_get(self.port)
                if status == 200 and body == BODY:
                    return
                raise RunFailed(f"{self.variant.label} answered {status} {body[:200]!r}")
            time.sleep(0.05)
        raise RunFailed(f"{self.variant.label} did not answer within {timeout:g} s: {self.stderr_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self.stderr_text()
            self._stderr.close()
            self._stderr = None


# -- one run, many rounds -----------------------------------------------------------------


@dataclass
class Bench:
    app: str
    duration: float
    warmup: float
    connections: int
    pinning: Any
    load: Any

    def run_one(self, group: str, variant: Variant, scenario: str, round_no: int) -> dict[str, Any]:
        from gpool._bench.machine import cpu_busy_seconds
        from gpool._bench.procs import child_setup

        keepalive = scenario == "keepalive"
        server = Server(
            variant,
            self.app,
            lambda argv: self.pinning.command(self.pinning.server_cpu, argv),
            child_setup,
        )
        LIVE.add(server)
        try:
            server.start()
            leaks = state_leaks(server.port)
            says_close = says_connection_close(server.port)
            if self.warmup > 0:
                self.load.run(server.port, self.warmup, keepalive)
            busy0 = cpu_busy_seconds(self.pinning.server_cpu) if self.pinning.enabled else None
            user0, sys0 = process_cpu_seconds(server.pid)
            result = self.load.run(server.port, self.duration, keepalive)
            user1, sys1 = process_cpu_seconds(server.pid)
            busy1 = cpu_busy_seconds(self.pinning.server_cpu) if self.pinning.enabled else None
        finally:
            server.stop()
            LIVE.discard(server)
        requests = result["requests"]
        user_s = user1 - user0
        sys_s = sys1 - sys0
        per = 1e6 / requests if requests else math.nan
        errors = dict(result["errors"])
        # See says_connection_close: one read error per request is end-of-file, not a failure.
        eof = min(errors.get("read", 0), requests + self.connections) if not keepalive and not says_close else 0
        if eof:
            errors["read"] -= eof
        other = None
        if busy0 is not None and busy1 is not None and result["elapsed_s"] > 0:
            other = max(busy1 - busy0 - user_s - sys_s, 0.0) / result["elapsed_s"]
        return {
            "round": round_no,
            "group": group,
            "role": variant.role,
            "server": variant.label.strip(),
            "scenario": scenario,
            "requests": requests,
            "elapsed_s": result["elapsed_s"],
            "rps": result["rps"],
            "cpu_user_s": user_s,
            "cpu_sys_s": sys_s,
            "cpu_us_per_req": (user_s + sys_s) * per,
            "user_us_per_req": user_s * per,
            "sys_us_per_req": sys_s * per,
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "socket_errors": errors,
            "eof_read_errors": eof,
            "says_connection_close": says_close,
            "non_2xx": result["non_2xx"],
            "state_leaks": leaks,
            "other_load": other,
        }


def orders(variants: Sequence[Variant], round_no: int, scenario_no: int) -> list[Variant]:
    """The order a group runs in: forward and backward, alternating by round and scenario."""
    return list(variants) if (round_no + scenario_no) % 2 == 0 else list(reversed(variants))


# -- figures ------------------------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(vals)) if vals else math.nan


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference and not math.isnan(reference) else math.nan


def _paired(runs: dict[int, dict[str, Any]], ref: dict[int, dict[str, Any]], key: str, how: str) -> float:
    rounds = sorted(set(runs) & set(ref))
    if how == "ratio":
        return _median(runs[r][key] / ref[r][key] for r in rounds if ref[r][key])
    return _median(runs[r][key] - ref[r][key] for r in rounds)


def summarize(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per scenario, group and role: medians and ratios; and the isolation costs."""
    by: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        by.setdefault((run["scenario"], run["group"], run["role"]), {})[run["round"]] = run
    summary: dict[str, Any] = {}
    for (scenario, group, role), rounds in by.items():
        vals = list(rounds.values())
        row: dict[str, Any] = {
            "server": vals[0]["server"],
            "rounds": len(vals),
            "rps": _median(v["rps"] for v in vals),
            "rps_min": min(v["rps"] for v in vals),
            "rps_max": max(v["rps"] for v in vals),
            "cpu_us_per_req": _median(v["cpu_us_per_req"] for v in vals),
            "user_us_per_req": _median(v["user_us_per_req"] for v in vals),
            "sys_us_per_req": _median(v["sys_us_per_req"] for v in vals),
            "p50_ms": _median(v["p50_ms"] for v in vals),
            "p99_ms": _median(v["p99_ms"] for v in vals),
            "socket_errors": sum(sum(v["socket_errors"].values()) for v in vals),
            "non_2xx": sum(v["non_2xx"] for v in vals),
            "eof_read_errors": sum(v["eof_read_errors"] for v in vals),
            "state_leaks": sorted({v["state_leaks"] for v in vals}),
            "other_load_max": max((v["other_load"] for v in vals if v["other_load"] is not None), default=None),
        }
        anchor = by.get((scenario, group, "anchor"))
        if anchor and role != "anchor":
            row["rps_vs_anchor"] = _ratio(row["rps"], _median(v["rps"] for v in anchor.values()))
            row["rps_paired_vs_anchor"] = _paired(rounds, anchor, "rps", "ratio")
            row["cpu_vs_anchor"] = _ratio(row["cpu_us_per_req"], _median(v["cpu_us_per_req"] for v in anchor.values()))
            row["cpu_paired_vs_anchor"] = _paired(rounds, anchor, "cpu_us_per_req", "ratio")
        summary.setdefault(scenario, {}).setdefault(group, {})[role] = row
    isolation = []
    for scenario, groups in summary.items():
        for group, roles in groups.items():
            if "gpool" in roles and "gpool-noiso" in roles:
                on, off = by[(scenario, group, "gpool")], by[(scenario, group, "gpool-noiso")]
                isolation.append(
                    {
                        "scenario": scenario,
                        "group": group,
                        "server": roles["gpool"]["server"],
                        "cpu_us_on": roles["gpool"]["cpu_us_per_req"],
                        "cpu_us_off": roles["gpool-noiso"]["cpu_us_per_req"],
                        "cost_us_per_req": roles["gpool"]["cpu_us_per_req"] - roles["gpool-noiso"]["cpu_us_per_req"],
                        "cost_us_paired": _paired(on, off, "cpu_us_per_req", "diff"),
                        "rps_on_vs_off": _ratio(roles["gpool"]["rps"], roles["gpool-noiso"]["rps"]),
                        "rps_paired_on_vs_off": _paired(on, off, "rps", "ratio"),
                    }
                )
    return summary, isolation


def _f(value: Any, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—".rjust(width)
    return format(value, fmt).rjust(width)


def render(report: dict[str, Any]) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        "gpool HTTP servers: gpool against the gevent servers it replaces",
        f"machine: {m['cpu_model']}, nproc {m['nproc']}, {m['platform']}",
        "versions: Python {python}, gevent {gevent}, greenlet {greenlet}, flask {flask}, "
        "wrk {wrk}, gpool {gpool}{commit}".format(
            commit=f" ({m['gpool_commit']}{', modified' if m.get('gpool_modified') else ''})"
            if m.get("gpool_commit")
            else "",
            **{k: m.get(k, "?") for k in ("python", "gevent", "greenlet", "flask", "wrk", "gpool")},
        ),
        f"run: app {c['app']}, wrk -t{c['wrk_threads']} -c{c['connections']}, "
        f"{c['rounds']} round(s) of {c['duration']:g} s (+{c['warmup']:g} s warm-up), {c['pinning']}, "
        "order alternating; medians over rounds",
    ]
    for note in c["notes"]:
        lines.append(f"note: {note}")
    head = (
        f"  {'group':<16} {'server':<44} {'req/s':>8} {'/anchor':>8} {'paired':>7} {'CPU µs/req':>10} "
        f"{'user':>7} {'sys':>6} {'/anchor':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'leak':>4}"
    )
    for scenario, title in SCENARIOS.items():
        groups = report["summary"].get(scenario)
        if not groups:
            continue
        lines += ["", title, head]
        for group in GROUPS:
            for i, role in enumerate(r for r in ROLES if r in groups.get(group, {})):
                row = groups[group][role]
                label = next(v.label for v in GROUPS[group] if v.role == role)
                leaks = row["state_leaks"]
                lines.append(
                    f"  {group if i == 0 else '':<16} {label:<44} {_f(row['rps'], ',.0f', 8)} "
                    f"{_f(row.get('rps_vs_anchor'), '.3f', 8)} {_f(row.get('rps_paired_vs_anchor'), '.3f', 7)} "
                    f"{_f(row['cpu_us_per_req'], '.1f', 10)} {_f(row['user_us_per_req'], '.1f', 7)} "
                    f"{_f(row['sys_us_per_req'], '.1f', 6)} {_f(row.get('cpu_vs_anchor'), '.3f', 8)} "
                    f"{_f(row['p50_ms'], '.2f', 7)} {_f(row['p99_ms'], '.2f', 7)} "
                    f"{row['socket_errors'] + row['non_2xx']:>5}{'*' if row['eof_read_errors'] else ' '} "
                    f"{'/'.join('yes' if x else 'no' for x in leaks):>4}"
                )
    if report["isolation"]:
        lines += [
            "",
            "per-request isolation cost (gpool server, isolation on minus off)",
            f"  {'scenario':<10} {'server':<44} {'on µs':>7} {'off µs':>7} {'Δ µs/req':>8} {'paired Δ':>8} "
            f"{'req/s on/off':>12} {'paired':>7}",
        ]
        for row in report["isolation"]:
            lines.append(
                f"  {row['scenario']:<10} {row['server']:<44} {_f(row['cpu_us_on'], '.1f', 7)} "
                f"{_f(row['cpu_us_off'], '.1f', 7)} {_f(row['cost_us_per_req'], '+.1f', 8)} "
                f"{_f(row['cost_us_paired'], '+.1f', 8)} {_f(row['rps_on_vs_off'], '.3f', 12)} "
                f"{_f(row['rps_paired_on_vs_off'], '.3f', 7)}"
            )
    lines += [
        "",
        "CPU µs/req: the server's user+sys CPU time over the wrk run / requests completed;",
        "user and sys are medians of their own. /anchor: ratio of medians; paired: median of per-round ratios.",
        "errors: wrk socket errors + non-2xx responses over all rounds (should be 0). *: the server closes after",
        "a Connection: close request without saying so in its response, so wrk counted one read error (EOF) per",
        "request, left out here (eof_read_errors in the JSON). leak: whether a second request on one keep-alive",
        "connection saw the ContextVar/threading.local value the first one set.",
    ]
    if report["warnings"]:
        lines += ["", *(f"WARNING: {w}" for w in report["warnings"])]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="gpool.wsgi.WSGIServer against gevent's WSGIServer (keep-alive and churn, wrk, pinned, "
        "alternating rounds). gpool's gunicorn workers: gpool bench --scenario gunicorn-..."
    )
    p.add_argument("--rounds", type=int, default=7, help="rounds (each runs every server once per scenario)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per run (whole seconds)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of discarded load before each run (0: none)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (-c)")
    p.add_argument("--app", choices=APPS, default="flask", help="the WSGI application served")
    p.add_argument("--group", action="append", choices=list(GROUPS), help="run only this group (repeatable)")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    p.add_argument("--no-isolation-off", action="store_true", help="leave out the isolation-off variants")
    p.add_argument("--server-cpu", default="0", help="CPU for the servers (taskset -c)")
    p.add_argument("--client-cpu", default="1", help="CPU for wrk (taskset -c)")
    p.add_argument("--nice", type=int, default=0, help="run servers and wrk at this niceness, where allowed (e.g. -10)")
    p.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.duration < 1:
        p.error("--duration must be >= 1 (wrk takes whole seconds)")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.connections < 1:
        p.error("--connections must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import shutil

    from gpool._bench.load import LoadGenerator
    from gpool._bench.machine import describe_machine
    from gpool._bench.procs import Pinning

    if shutil.which("wrk") is None:
        print("http_servers: wrk not found on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    pinning = Pinning(args.server_cpu, args.client_cpu, niceness=args.nice)
    notes = [pinning.note] if pinning.note else []
    warnings: list[str] = []

    groups = {name: list(GROUPS[name]) for name in (args.group or GROUPS)}
    scenarios = args.scenario or list(SCENARIOS)
    if args.no_isolation_off:
        groups = {g: [v for v in vs if v.role != "gpool-noiso"] for g, vs in groups.items()}
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    machine = describe_machine()
    machine["flask"] = _version("flask")
    bench = Bench(
        app=args.app,
        duration=float(math.ceil(args.duration)),
        warmup=float(math.ceil(args.warmup)) if args.warmup else 0.0,
        connections=args.connections,
        pinning=pinning,
        load=LoadGenerator("wrk", pinning, args.connections),
    )
    per_round = sum(len(vs) for vs in groups.values()) * len(scenarios)
    estimate = args.rounds * per_round * (bench.duration + bench.warmup + 1.5)
    print(
        f"{args.rounds} round(s) x {per_round} runs, about {estimate / 60:.0f} min",
        file=sys.stderr,
    )
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for round_no in range(args.rounds):
            for scenario_no, scenario in enumerate(scenarios):
                for group, variants in groups.items():
                    for variant in orders(variants, round_no, scenario_no):
                        what = f"[{round_no + 1}/{args.rounds}] {scenario} {variant.label.strip()}"
                        try:
                            run = bench.run_one(group, variant, scenario, round_no)
                        except (RunFailed, OSError, RuntimeError, subprocess.SubprocessError) as exc:
                            warnings.append(f"{what}: failed: {exc}")
                            print(f"{what}: FAILED: {exc}", file=sys.stderr)
                            continue
                        runs.append(run)
                        errors = sum(run["socket_errors"].values()) + run["non_2xx"]
                        if errors:
                            warnings.append(
                                f"{what}: {run['non_2xx']} non-2xx responses, socket errors {run['socket_errors']}"
                            )
                        print(
                            f"{what}: {run['rps']:,.0f} req/s, {run['cpu_us_per_req']:.1f} CPU µs/req"
                            + (f", {errors} errors" if errors else ""),
                            file=sys.stderr,
                        )
    except KeyboardInterrupt:
        warnings.append("interrupted: figures from the runs completed so far")
    finally:
        for server in list(LIVE):
            server.stop()
    noisy = [r["other_load"] for r in runs if r["other_load"] is not None and r["other_load"] > MAX_OTHER_LOAD]
    if noisy:
        warnings.append(
            f"{len(noisy)} of {len(runs)} runs shared the server CPU with other processes for more than "
            f"{MAX_OTHER_LOAD:.0%} of the time (up to {max(noisy):.0%}): figures are noisy, rerun on a quiet machine"
        )
    summary, isolation = summarize(runs)
    report = {
        "machine": machine,
        "config": {
            "app": args.app,
            "rounds": args.rounds,
            "duration": bench.duration,
            "warmup": bench.warmup,
            "connections": args.connections,
            "wrk_threads": pinning.client_cpus,
            "pinning": pinning.describe(),
            "groups": {g: [v.label.strip() for v in vs] for g, vs in groups.items()},
            "scenarios": scenarios,
            "notes": notes,
            "wall_s": round(time.monotonic() - started, 1),
        },
        "summary": summary,
        "isolation": isolation,
        "warnings": warnings,
        "runs": runs,
    }
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(_no_nan(report), f, indent=1, allow_nan=False)
            f.write("\n")
    return 0 if runs and not any("failed" in w for w in warnings) else 1


def _no_nan(value: Any) -> Any:
    """*value* with every NaN (a figure that could not be computed) as None: valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
