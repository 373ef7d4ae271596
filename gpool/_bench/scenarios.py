"""Parent side: the scenarios, each run as rounds of child processes.

Every round runs each strategy once, in an order that rotates from round to round, so
a slow phase of a noisy machine does not always fall on the same strategy. Each run
starts a fresh server process, so no strategy inherits another's heap.
"""

from __future__ import annotations

import http.client
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .apps import APPS, state_leaks
from .gunicorn import STRATEGIES as GUNICORN_STRATEGIES
from .gunicorn import WORKERS, GunicornServer, labels
from .load import LoadGenerator
from .machine import cpu_busy_seconds
from .procs import Child, ChildFailed, Pinning
from .strategies import FLOOR

__all__ = [
    "APPS",
    "CHURN",
    "GUNICORN_SCENARIOS",
    "SCENARIOS",
    "ChurnScenario",
    "Progress",
    "Settings",
    "memory_strategies",
    "rotated",
    "run_churn",
    "run_dispatch",
    "run_memory",
]


@dataclass(frozen=True)
class ChurnScenario:
    kind: str  # which server: "tcp", "wsgi", or a gunicorn kind (gunicorn.WORKERS)
    keepalive: bool
    title: str

    @property
    def gunicorn(self) -> bool:
        return self.kind in WORKERS

    def strategies(self, chosen: Sequence[str]) -> list[str]:
        """Those of the *chosen* strategies that this scenario runs."""
        if self.gunicorn:
            return [s for s in chosen if s in GUNICORN_STRATEGIES]
        return list(chosen)


_GEVENT = "gunicorn -w 1: -k gevent vs -k gpool.workers.GPoolWorker"
_PYWSGI = "gunicorn -w 1: -k gevent_pywsgi vs -k gpool.workers.GPoolPyWSGIWorker"
CHURN: dict[str, ChurnScenario] = {
    "tcp-churn": ChurnScenario("tcp", False, "raw-TCP connection churn: StreamServer, minimal HTTP responder"),
    "wsgi-churn": ChurnScenario("wsgi", False, "pywsgi connection churn: WSGIServer, hello-world app"),
    "wsgi-keepalive": ChurnScenario("wsgi", True, "pywsgi keep-alive: WSGIServer, hello-world app"),
    "gunicorn-gevent-churn": ChurnScenario("gunicorn-gevent", False, f"connection churn, {_GEVENT}"),
    "gunicorn-gevent-keepalive": ChurnScenario("gunicorn-gevent", True, f"keep-alive, {_GEVENT}"),
    "gunicorn-pywsgi-churn": ChurnScenario("gunicorn-pywsgi", False, f"connection churn, {_PYWSGI}"),
    "gunicorn-pywsgi-keepalive": ChurnScenario("gunicorn-pywsgi", True, f"keep-alive, {_PYWSGI}"),
}
GUNICORN_SCENARIOS = tuple(name for name, spec in CHURN.items() if spec.gunicorn)
SCENARIOS = (*CHURN, "dispatch", "memory", "latency")
# The floor is a measuring stick for dispatch: it never culls, so memory leaves it out.
_NOT_IN_MEMORY = (FLOOR,)


@dataclass(frozen=True)
class Settings:
    scenarios: tuple[str, ...]
    strategies: tuple[str, ...]
    rounds: int
    duration: float
    warmup: float
    connections: int
    memory_connections: int
    memory_rounds: int
    max_idle: float
    tasks: int
    dispatch_rounds: int
    alt: str | None
    quick: bool
    max_other_load: float
    retries: int
    app: str = "flask"  # the gunicorn scenarios' WSGI application (apps.APPS)


def rotated(names: Sequence[str], round_no: int) -> list[str]:
    """*names* starting at position *round_no* (mod len), wrapping around."""
    k = round_no % len(names)
    return [*names[k:], *names[:k]]


class Progress:
    """One line on stderr per finished step, with the step count and time so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        self.line(f"[{self.done:3d}/{self.total} {time.monotonic() - self.started:5.0f}s] {text}")

    @staticmethod
    def line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _server_argv(kind: str, strategy: str, settings: Settings, *extra: str) -> list[str]:
    argv = Child.python_module("server", "--kind", kind, "--strategy", strategy, *extra)
    if settings.alt:
        argv += ["--alt", settings.alt]
    return argv


def _start_server(pinning: Pinning, argv: list[str], what: str) -> tuple[Child, int]:
    server = Child(pinning.command(pinning.server_cpu, argv), what=what)
    try:
        port = int(server.expect("PORT", 30)["port"])
    except BaseException:
        server.kill()
        raise
    return server, port


def run_churn(
    name: str, settings: Settings, load: LoadGenerator, pinning: Pinning, progress: Progress
) -> dict[str, Any]:
    """Rounds of load on a fresh server per strategy; the figures of every run.

    A run during which other work took more than ``settings.max_other_load`` of the
    server's CPU is run again, up to ``settings.retries``
    times; the last attempt is kept (marked ``noisy`` if it was noisy too).
    """
    spec = CHURN[name]
    strategies = spec.strategies(settings.strategies)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    problems: list[str] = []
    for r in range(settings.rounds):
        for strategy in rotated(strategies, r):
            what = f"{name} round {r + 1}/{settings.rounds} {strategy:<14}"
            for attempt in range(settings.retries + 1):
                result, stderr = _churn_run(spec, strategy, settings, load, pinning)
                # The server's CPU is the one that counts: the server is the bottleneck by
                # design, while the load generator (at raised priority) needs a fraction
                # of its CPU and is reported, not judged.
                other = result.get("other_load_server_cpu", 0.0)
                result.update(round=r, attempts=attempt + 1, noisy=other > settings.max_other_load)
                if not result["noisy"]:
                    break
                if attempt < settings.retries:
                    Progress.line(f"{' ' * 13}{what} other load {other:.0%} > {settings.max_other_load:.0%}: again")
            problems += _check_run(f"{name} round {r + 1} {strategy}", result, stderr)
            runs[strategy].append(result)
            noise = ""
            if "other_load_server_cpu" in result:
                noise = f"; other load {result['other_load_server_cpu']:.0%}/{result['other_load_client_cpu']:.0%}"
            progress.step(
                f"{what} {result['rps']:9,.0f} req/s  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                f"  server {result['server_cpu_us_per_request']:5.1f} CPU-us/req, {result['server_cpu_busy']:.0%} busy"
                + noise
            )
    out: dict[str, Any] = {"title": spec.title, "load": load.describe(spec.keepalive), "runs": runs}
    if spec.gunicorn:
        # The "pool" strategy is gevent's own worker class: the anchor the ratios use.
        out.update(title=f"{spec.title}; app {settings.app}", labels=labels(spec.kind), reference="anchor")
    return {**out, "problems": problems}


class _BenchServer:
    """A server child of ours (:mod:`.server`), seen as the churn run sees a server."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port

    def sample(self) -> dict[str, Any]:
        mark: dict[str, Any] = self.child.ask("mark", "MARK")
        return mark

    def finish(self) -> tuple[dict[str, Any], str]:
        final = self.child.finish("DONE")
        return final, self.child.stderr_text()

    def kill(self) -> None:
        self.child.kill()


def _start_for(spec: ChurnScenario, strategy: str, settings: Settings, pinning: Pinning) -> Any:
    if spec.gunicorn:
        return GunicornServer(spec.kind, strategy, settings.app, pinning)
    child, port = _start_server(pinning, _server_argv(spec.kind, strategy, settings), f"{spec.kind} {strategy} server")
    return _BenchServer(child, port)


def _state_leaks(server: GunicornServer) -> bool:
    try:
        return state_leaks(server.port)
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        raise ChildFailed(f"{server.what}: isolation probe failed: {exc}") from None


def _churn_run(
    spec: ChurnScenario, strategy: str, settings: Settings, load: LoadGenerator, pinning: Pinning
) -> tuple[dict[str, Any], str]:
    """One run: a fresh server, warm-up, measured load, the server's own figures.

    The server is one of ours or a gunicorn worker: both tell their CPU time (user and
    system); ours also counts the requests it answered.
    """
    server = _start_for(spec, strategy, settings, pinning)
    try:
        leaks = _state_leaks(server) if spec.gunicorn else None
        if settings.warmup > 0:
            load.run(server.port, settings.warmup, spec.keepalive)
        before = server.sample()
        busy = _busy(pinning)
        wall = time.monotonic()
        result = load.run(server.port, settings.duration, spec.keepalive)
        wall = time.monotonic() - wall
        after = server.sample()
        busy_after = _busy(pinning)
        final, stderr = server.finish()
    except BaseException:
        server.kill()
        raise
    user_s = after["user_s"] - before["user_s"]
    sys_s = after["sys_s"] - before["sys_s"]
    cpu_s = user_s + sys_s
    # A gunicorn worker counts nothing for us: the client's count stands in.
    handled = after["handled"] - before["handled"] if "handled" in after else result["requests"]
    per_request = 1e6 / max(handled, 1)
    result.update(
        server_handled=handled,
        server_cpu_us_per_request=cpu_s * per_request,
        server_user_us_per_request=user_s * per_request,
        server_sys_us_per_request=sys_s * per_request,
        # Throughput per unit of the server's own CPU: what req/s would be on a CPU of
        # its own, and nearly blind to other work sharing that CPU.
        requests_per_cpu_s=handled / cpu_s if cpu_s > 0 else 0.0,
        server_cpu_busy=cpu_s / wall if wall > 0 else 0.0,
        server_counters=final,
    )
    if leaks is not None:
        result["state_leaks"] = leaks
    if busy is not None and busy_after is not None and wall > 0:
        # The share of each CPU that went to anything but the server or the load
        # generator (wrk or ours, reaped by now): the noise this run suffered.
        result["other_load_server_cpu"] = max(busy_after[0] - busy[0] - cpu_s, 0.0) / wall
        client_s = busy_after[2] - busy[2]
        result["other_load_client_cpu"] = max(busy_after[1] - busy[1] - client_s, 0.0) / wall
    return result, stderr


def _busy(pinning: Pinning) -> tuple[float, float, float] | None:
    """Busy seconds of the server CPU and of the client CPU so far, and the CPU seconds
    of reaped children (the load generators), to measure what else ran meanwhile."""
    if not pinning.enabled:
        return None
    server = cpu_busy_seconds(pinning.server_cpu)
    client = cpu_busy_seconds(pinning.client_cpu)
    if server is None or client is None:
        return None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return server, client, children.ru_utime + children.ru_stime


def _check_run(what: str, result: dict[str, Any], stderr: str) -> list[str]:
    problems = []
    if result["requests"] <= 0:
        problems.append(f"{what}: no responses")
    if result["non_2xx"]:
        problems.append(f"{what}: {result['non_2xx']} responses were not 200")
    if result["server_handled"] < result["requests"]:
        problems.append(f"{what}: the server answered {result['server_handled']} < the client's {result['requests']}")
    if stderr:
        problems.append(f"{what}: server wrote to stderr: {stderr[:300]!r}")
    if result["server_counters"].get("returncode"):  # gunicorn, stopped by SIGTERM
        problems.append(f"{what}: the server exited with status {result['server_counters']['returncode']}")
    return problems


def run_dispatch(settings: Settings, pinning: Pinning, progress: Progress) -> dict[str, Any]:
    """The in-process dispatch scenario, in one child pinned to the server CPU."""
    argv = Child.python_module("dispatch", "--tasks", str(settings.tasks), "--rounds", str(settings.dispatch_rounds))
    for strategy in (*settings.strategies, "handoff"):
        argv += ["--strategy", strategy]
    if settings.alt:
        argv += ["--alt", settings.alt]
    child = Child(pinning.command(pinning.server_cpu, argv), what="dispatch")
    try:
        figures = child.expect("RESULT", 300)
        child.finish()
    except BaseException:
        child.kill()
        raise
    progress.step(f"dispatch: {settings.dispatch_rounds} rounds x {settings.tasks} tasks per strategy")
    return {
        "title": f"dispatch from the hub: {settings.tasks} tasks per batch, each blocking once (gevent.sleep(0))",
        "us_per_task": figures["block"],
        "noblock_us_per_task": figures["noblock"],
    }


def _poll(server: Child, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        probe: dict[str, Any] = server.ask("probe", "PROBE")
        if done(probe):
            return probe
        if time.monotonic() > deadline:
            raise ChildFailed(f"{what} not reached within {timeout:g} s: {probe}")
        time.sleep(0.1)


def _serving(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda probe: bool(probe["active"] >= count)


def memory_strategies(chosen: Sequence[str]) -> list[str]:
    return [s for s in chosen if s not in _NOT_IN_MEMORY]


def run_memory(settings: Settings, pinning: Pinning, progress: Progress) -> dict[str, Any]:
    """Hold many idle connections on a raw-TCP server; probe it with them open, then
    once they have closed and max_idle has passed."""
    n = settings.memory_connections
    strategies = memory_strategies(settings.strategies)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    for r in range(settings.memory_rounds):
        for strategy in rotated(strategies, r):
            extra = ("--max-idle", str(settings.max_idle), "--backlog", "1024", "--fds", str(n + 256))
            argv = _server_argv("tcp", strategy, settings, *extra)
            server, port = _start_server(pinning, argv, f"memory {strategy} server")
            client: Child | None = None
            try:
                start = server.ask("probe", "PROBE")
                client = Child(
                    pinning.command(
                        pinning.client_cpu,
                        Child.python_module("loadgen", "hold", "--port", str(port), "--connections", str(n)),
                    ),
                    what="memory client",
                )
                held: int = client.expect("HELD", 90)["held"]
                held_probe = _poll(server, _serving(held), 30, f"{held} connections served")
                client.send("close")
                client.expect("CLOSED", 30)
                client.finish()
                _poll(server, lambda p: p["active"] == 0, 30, "all connections closed")
                closed_at = time.monotonic()
                # Every strategy waits the same time: max_idle, plus a margin for the
                # culling timer; WorkerPools are then polled until their workers are gone.
                time.sleep(settings.max_idle + 0.5)
                after = _poll(
                    server,
                    lambda p: not (p["pool"] or {}).get("workers"),
                    settings.max_idle * 2 + 5,
                    "idle workers culled",
                )
                culled_after_s = time.monotonic() - closed_at
                trimmed = server.ask("trim", "TRIM")
                final = server.finish("DONE")
            except BaseException:
                if client is not None:
                    client.kill()
                server.kill()
                raise
            run = {
                "round": r,
                "connections": held,
                "rss_mb_start": start["rss_kb"] / 1024,
                "rss_mb_held": held_probe["rss_kb"] / 1024,
                "rss_mb_after": after["rss_kb"] / 1024,
                "rss_mb_trimmed": trimmed["rss_kb"] / 1024,
                "greenlets_start": start["greenlets"],
                "greenlets_held": held_probe["greenlets"],
                "greenlets_after": after["greenlets"],
                "after_s": culled_after_s,
                "pool_held": held_probe["pool"],
                "pool_after": after["pool"],
                "server_counters": final,
            }
            runs[strategy].append(run)
            progress.step(
                f"memory round {r + 1}/{settings.memory_rounds} {strategy:<14} {held} connections:"
                f" RSS {run['rss_mb_start']:.0f} -> {run['rss_mb_held']:.0f} -> {run['rss_mb_after']:.0f}"
                f" (trimmed {run['rss_mb_trimmed']:.0f}) MB,"
                f" greenlets {run['greenlets_start']} -> {run['greenlets_held']} -> {run['greenlets_after']}"
            )
    return {
        "title": f"{n} idle connections held on a raw-TCP server, then closed (max_idle {settings.max_idle:g} s)",
        "runs": runs,
    }
