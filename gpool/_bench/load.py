"""Parent side: putting load on a server with ``wrk`` or with the built-in generator.

Both return the same record: responses counted, requests per second, errors, and
latency percentiles in milliseconds.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from typing import Any

from .procs import Child, ChildFailed, Pinning, child_setup
from .stats import merge_histograms, percentile_ms

__all__ = ["LoadGenerator", "choose_load", "parse_wrk"]

_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def choose_load(wanted: str) -> tuple[str, str]:
    """The load generator to use for ``--load`` *wanted*, and a note when it is not wrk."""
    have_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not have_wrk:
        raise SystemExit("gpool bench: --load wrk: wrk not found on PATH (apt-get install wrk)")
    if wanted == "builtin" or not have_wrk:
        note = "" if wanted == "builtin" else "wrk not found: using the built-in load generator"
        return "builtin", note
    return "wrk", ""


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures in wrk's report (run with ``--latency``)."""
    rps = _WRK_RPS.search(text)
    requests = _WRK_REQUESTS.search(text)
    if not rps or not requests:
        raise ChildFailed(f"cannot read wrk's report:\n{text}")
    errors = _WRK_ERRORS.search(text)
    non2xx = _WRK_NON2XX.search(text)
    percentiles = {int(q): float(v) * _TO_MS[unit] for q, v, unit in _WRK_PERCENTILE.findall(text)}
    return {
        "requests": int(requests.group(1)),
        "elapsed_s": float(requests.group(2)) * _TO_MS[requests.group(3)] / 1e3,
        "rps": float(rps.group(1)),
        "errors": dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors else {},
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": percentiles.get(50, math.nan),
        "p99_ms": percentiles.get(99, math.nan),
    }


class LoadGenerator:
    """Runs load of one kind against a port, on the client CPUs."""

    def __init__(self, kind: str, pinning: Pinning, connections: int) -> None:
        self.kind = kind
        self.pinning = pinning
        self.connections = connections

    def describe(self, keepalive: bool) -> str:
        mode = "keep-alive" if keepalive else "Connection: close"
        procs = self.pinning.client_cpus
        if self.kind == "wrk":
            return f"wrk -t{procs} -c{self.connections} ({mode})"
        return f"built-in generator, {procs} process(es), {self.connections} connections ({mode})"

    def run(self, port: int, duration: float, keepalive: bool) -> dict[str, Any]:
        if self.kind == "wrk":
            return self._wrk(port, duration, keepalive)
        return self._builtin(port, duration, keepalive)

    def _wrk(self, port: int, duration: float, keepalive: bool) -> dict[str, Any]:
        seconds = max(math.ceil(duration), 1)  # wrk takes whole seconds
        argv = ["wrk", f"-t{self.pinning.client_cpus}", f"-c{self.connections}", f"-d{seconds}s", "--latency"]
        if not keepalive:
            argv += ["-H", "Connection: close"]
        argv.append(f"http://127.0.0.1:{port}/")
        cmd = self.pinning.command(self.pinning.client_cpu, argv)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=child_setup)
        if done.returncode != 0:
            raise ChildFailed(f"wrk failed (status {done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout)

    def _builtin(self, port: int, duration: float, keepalive: bool) -> dict[str, Any]:
        procs = min(self.pinning.client_cpus, self.connections)
        share = [self.connections // procs + (1 if i < self.connections % procs else 0) for i in range(procs)]
        mode = "keepalive" if keepalive else "churn"
        children = [
            Child(
                self.pinning.command(
                    self.pinning.client_cpu,
                    Child.python_module(
                        "loadgen", mode, "--port", str(port), "--connections", str(n), "--duration", str(duration)
                    ),
                ),
                what="load generator",
            )
            for n in share
        ]
        try:
            results = [child.expect("RESULT", duration + 30) for child in children]
        finally:
            for child in children:
                child.finish()
        hist = merge_histograms([{int(k): v for k, v in r["latency_hist"].items()} for r in results])
        requests = sum(r["requests"] for r in results)
        elapsed = max(r["elapsed_s"] for r in results)
        errors: dict[str, int] = {}
        for r in results:
            for name, count in r["errors"].items():
                errors[name] = errors.get(name, 0) + count
        return {
            "requests": requests,
            "elapsed_s": elapsed,
            "rps": requests / elapsed if elapsed > 0 else 0.0,
            "errors": errors,
            "non_2xx": sum(r["non_2xx"] for r in results),
            "p50_ms": percentile_ms(hist, 50),
            "p99_ms": percentile_ms(hist, 99),
        }
