"""Isolation under load: no client ever sees another client's values.

100,000 tasks (at GPOOL_RELIABILITY_SCALE=1) run on a bounded pool, so every worker
serves hundreds of them, many at once. Each task sets its own client id in a
``ContextVar``, a plain ``gevent.local`` and a ``local`` subclass with defaults,
switches away while the others run, and checks on entry and after every switch that
it sees nothing but its own values. The same load runs monkey-patched in a subprocess
with ``threading.local``, and through a real ``StreamServer`` whose clients judge what
the handler saw. Two negative controls show the checks do catch leaks: ``isolate=False``
(stale values from the worker's previous client) and an unpatched ``threading.local``
(values overwritten by concurrent clients while a task is switched out).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import subprocess
import sys
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from gevent import GreenletExit, monkey
from gevent.local import local
from gevent.server import StreamServer
from greenlet import getcurrent

from gpool import WorkerPool

from ..helpers import SCALE, connect, live_workers, running, scaled, wait_until

TASKS = scaled(100_000)
CONNECTIONS = scaled(20_000)
SIZE = 200
# More clients than slots: the pool stays full and the rest wait in the listen backlog.
CLIENTS = 300
CONTROL_TASKS = 2_000
CONTROL_CONNECTIONS = 400
# The subprocess may not run longer than this (the test's own bound is 240 s x scale).
CHILD_TIMEOUT = 150 * max(SCALE, 1.0)
ROOT = Path(__file__).resolve().parents[2]

# ContextVars belong at module level, made once (every Context they are set in holds on
# to them): one per kind of local the probes use, shared by the tests of this process.
_client_vars: dict[type, contextvars.ContextVar[Any]] = {}

# Tasks ending this way count as failed (through submit) or completed (GreenletExit);
# isolation must hold after either.
FAILING, EXITING = 3, 7


class ClientError(Exception):
    """Raised on purpose by every tenth task, after it has set and checked its values."""


class Probes:
    """Everything a task can leave behind: a ContextVar, a plain local and a local
    subclass whose ``__init__`` gives defaults (counted, so the test knows it ran
    again for every task)."""

    def __init__(self, local_type: type) -> None:
        if local_type not in _client_vars:
            _client_vars[local_type] = contextvars.ContextVar(f"client_{local_type.__name__}", default=None)
        self.var = _client_vars[local_type]
        self.plain = local_type()
        self.inits = 0
        probes = self

        class Session(local_type):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                probes.inits += 1
                self.client = None
                self.items: list[int] = []

        self.session = Session()
        self.empty = {"context": [], "var": None, "plain": {}, "session": {"client": None, "items": []}}

    def seen(self) -> dict[str, Any]:
        """What the calling greenlet sees now, as JSON-ready data (a snapshot: the
        task goes on to change the session's list)."""
        return {
            "context": sorted(var.name for var in contextvars.copy_context()),
            "var": self.var.get(),
            "plain": _snapshot(self.plain),
            "session": _snapshot(self.session),
        }

    def own(self, client: int) -> dict[str, Any]:
        """What a task that set its values for *client* must see."""
        return {
            "context": [self.var.name],
            "var": client,
            "plain": {"client": client},
            "session": {"client": client, "items": [client]},
        }

    def set(self, client: int) -> None:
        self.var.set(client)
        self.plain.client = client
        self.session.client = client
        self.session.items.append(client)


def _snapshot(holder: Any) -> dict[str, Any]:
    return {name: list(value) if isinstance(value, list) else value for name, value in vars(holder).items()}


class Violations:
    """Checks that disagree with what the task should see, counted per probe."""

    def __init__(self) -> None:
        self.count = 0
        self.by_probe: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    def check(self, client: int, phase: str, seen: dict[str, Any], expected: dict[str, Any]) -> None:
        if seen == expected:
            return
        self.count += 1
        for probe, value in seen.items():
            if value != expected[probe]:
                self.by_probe[f"{phase}:{probe}"] += 1
        if len(self.examples) < 5:
            self.examples.append({"client": client, "phase": phase, "seen": seen})


def run_load(local_type: type, *, size: int, tasks: int, isolate: bool) -> dict[str, Any]:
    """Run *tasks* tasks, at most *size* at once, and return what they saw.

    Safe to call in a monkey-patched subprocess (plain data in, JSON-ready data out).
    """
    workers_before = live_workers()
    probes = Probes(local_type)
    inits_before = probes.inits
    violations = Violations()
    per_worker: Counter[int] = Counter()
    workers: weakref.WeakSet[Any] = weakref.WeakSet()
    flight = {"now": 0, "peak": 0, "started": 0, "interleaved": 0}
    pool = WorkerPool(size, isolate=isolate)

    def task(client: int) -> None:
        flight["started"] += 1
        flight["now"] += 1
        flight["peak"] = max(flight["peak"], flight["now"])
        per_worker[id(getcurrent())] += 1
        workers.add(getcurrent())
        try:
            violations.check(client, "entry", probes.seen(), probes.empty)
            probes.set(client)
            own = probes.own(client)
            mark = flight["started"]
            for switch in range(1 + client % 3):
                # Mostly straight back through the hub; now and then a real timer.
                gevent.sleep(0.0005 if client % 64 == switch else 0)
                violations.check(client, "after switch", probes.seen(), own)
            if flight["started"] != mark:
                flight["interleaved"] += 1
        finally:
            flight["now"] -= 1
        if client % 10 == FAILING:
            raise ClientError(client)
        if client % 10 == EXITING:
            raise GreenletExit

    started = time.perf_counter()
    for client in range(tasks):
        # From a greenlet, spawn waits for a slot while all are busy, so the pool
        # stays full for the whole run.
        if client % 10 == FAILING:
            pool.submit(task, client)
        else:
            pool.spawn(task, client)
    finished = pool.join(timeout=60 * max(SCALE, 1.0))
    seconds = time.perf_counter() - started
    stats = pool.stats()
    pool.close()
    pool.join(timeout=5)
    # close() hands each idle worker its stop through the hub; let it run. (Another
    # test's idle workers may be culled meanwhile, so the global count may only drop.)
    wait_until(lambda: not any(not worker.dead for worker in workers), what="every worker gone after close()")
    left = live_workers()
    assert left <= workers_before, f"{left - workers_before} worker greenlets outlived close() and join()"
    return {
        "finished": finished,
        "tasks": tasks,
        "size": size,
        "isolate": isolate,
        "seconds": round(seconds, 2),
        "violations": violations.count,
        "by_probe": dict(violations.by_probe),
        "examples": violations.examples,
        "workers": len(per_worker),
        "tasks_per_worker": [min(per_worker.values()), max(per_worker.values())],
        "peak_in_flight": flight["peak"],
        "interleaved": flight["interleaved"],
        "inits": probes.inits - inits_before,
        "expected_failures": sum(1 for client in range(tasks) if client % 10 == FAILING),
        "stats": dataclasses.asdict(stats),
    }


def check_isolated(summary: dict[str, Any]) -> None:
    """What an isolated run must show, with the evidence that it proves something."""
    tasks, size, stats = summary["tasks"], summary["size"], summary["stats"]
    assert summary["finished"], summary
    assert summary["violations"] == 0, summary
    # Every task saw its own Session.__init__ run: fresh defaults, not a reset by hand.
    assert summary["inits"] == tasks, summary
    # Load: the pool was full, tasks ran interleaved, and workers served many tasks each.
    # (A task's short timer can end it before the last of the first batch starts.)
    assert summary["peak_in_flight"] >= size * 9 // 10, summary
    assert summary["interleaved"] >= tasks // 2, summary
    assert summary["workers"] == stats["workers_started"] <= size, summary
    assert summary["tasks_per_worker"][0] >= tasks // size // 4, summary
    # The pool was idle at the end and its counters add up.
    assert stats["busy"] == 0 and stats["detached"] == 0, stats
    assert stats["tasks_started"] == tasks, stats
    assert stats["tasks_failed"] == summary["expected_failures"], stats
    assert stats["tasks_killed"] == 0, stats
    assert stats["tasks_started"] == stats["tasks_completed"] + stats["tasks_failed"] + stats["tasks_killed"], stats


def check_leaky(summary: dict[str, Any]) -> None:
    """Without isolation each probe must leak: proof that the checks can fail."""
    assert summary["finished"], summary
    assert summary["violations"] > 0, summary
    for probe in ("context", "var", "plain", "session"):
        assert summary["by_probe"].get(f"entry:{probe}", 0) > 0, (probe, summary)
    # The subclass was initialised once per worker, not once per task.
    assert summary["inits"] == summary["workers"], summary


def report(label: str, summary: dict[str, Any]) -> None:
    stats = summary["stats"]
    reuse = stats["tasks_started"] / max(stats["workers_started"], 1)
    print(
        f"\n{label}: {summary['tasks']} tasks, size {summary['size']}, {stats['workers_started']} workers "
        f"(reuse {reuse:.0f}x, {summary['tasks_per_worker'][0]}-{summary['tasks_per_worker'][1]} tasks each), "
        f"peak in flight {summary['peak_in_flight']}, interleaved {summary['interleaved']}, "
        f"violations {summary['violations']} {summary['by_probe']}, {summary['seconds']} s"
    )


# -- in process: ContextVar and gevent.local ------------------------------------------


def test_tasks_under_load_never_see_another_clients_values() -> None:
    summary = run_load(local, size=SIZE, tasks=TASKS, isolate=True)
    report("gevent.local", summary)
    check_isolated(summary)


def test_without_isolation_the_same_load_leaks() -> None:
    summary = run_load(local, size=20, tasks=CONTROL_TASKS, isolate=False)
    report("gevent.local, isolate=False", summary)
    check_leaky(summary)


def test_a_local_shared_by_every_greenlet_is_caught_mid_task() -> None:
    # The other control: an unpatched threading.local is one object for every greenlet
    # of this thread, so concurrent clients overwrite each other's values while they
    # are switched out. The checks after each switch must see that, and must still
    # find the ContextVar clean (isolation is per probe, not all or nothing).
    shared_local = monkey.get_original("_thread", "_local")
    summary = run_load(shared_local, size=20, tasks=CONTROL_TASKS, isolate=True)
    report("unpatched threading.local", summary)
    assert summary["finished"], summary
    for probe in ("plain", "session"):
        assert summary["by_probe"].get(f"after switch:{probe}", 0) > 0, (probe, summary)
    assert not any(key.endswith((":var", ":context")) for key in summary["by_probe"]), summary


# -- monkey-patched subprocess: threading.local ----------------------------------------

_CHILD = """
from gevent import monkey

monkey.patch_all()

import json
import sys
import threading

import gevent.local

from tests.reliability.test_isolation_load import run_load

assert threading.local is gevent.local.local, threading.local
size, tasks, control = map(int, sys.argv[1:])
print(json.dumps({
    "isolated": run_load(threading.local, size=size, tasks=tasks, isolate=True),
    "control": run_load(threading.local, size=20, tasks=control, isolate=False),
}))
"""


def test_monkey_patched_threading_local_under_load() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(SIZE), str(TASKS), str(CONTROL_TASKS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    summaries = json.loads(done.stdout)
    report("threading.local (patched)", summaries["isolated"])
    report("threading.local (patched), isolate=False", summaries["control"])
    check_isolated(summaries["isolated"])
    check_leaky(summaries["control"])


# -- through a real server -------------------------------------------------------------


def read_line(sock: Any) -> bytes:
    """One newline-terminated message; the protocol never sends more before a reply."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"peer closed after {data!r}")
        data += chunk
    return data[:-1]


def serve_load(*, size: int, connections: int, isolate: bool) -> dict[str, Any]:
    """Each client sends its id; the handler sets it, waits for the client's next
    message (other connections run meanwhile) and replies with what it saw on entry
    and after the wait. The clients judge."""
    probes = Probes(local)
    pool = WorkerPool(size, isolate=isolate)

    def handle(sock: Any, _address: Any) -> None:
        entry = probes.seen()
        client = int(read_line(sock))
        probes.set(client)
        sock.sendall(b"ready\n")
        if read_line(sock) != b"check":
            raise AssertionError("protocol")
        reply = {"entry": entry, "after": probes.seen(), "worker": id(getcurrent())}
        sock.sendall(json.dumps(reply).encode() + b"\n")

    violations = Violations()
    workers: Counter[int] = Counter()
    ids = iter(range(connections))

    def client_loop(server: StreamServer) -> None:
        for client in ids:
            with connect(server) as sock:
                sock.sendall(b"%d\n" % client)
                assert read_line(sock) == b"ready"
                sock.sendall(b"check\n")
                reply = json.loads(read_line(sock))
            violations.check(client, "entry", reply["entry"], probes.empty)
            violations.check(client, "after switch", reply["after"], probes.own(client))
            workers[reply["worker"]] += 1

    started = time.perf_counter()
    # A backlog above CLIENTS: with a full pool the rest wait in the accept queue, and
    # one that overflowed it could be reset by the kernel (not what is tested here).
    with running(StreamServer(("127.0.0.1", 0), handle, spawn=pool, backlog=4 * CLIENTS)) as server:
        clients = [gevent.spawn(client_loop, server) for _ in range(min(CLIENTS, connections))]
        try:
            gevent.joinall(clients, timeout=120 * max(SCALE, 1.0), raise_error=True)
        finally:
            gevent.killall(clients)  # after a failure, the other clients' sockets too
        finished = all(client.successful() for client in clients)
        seconds = time.perf_counter() - started
        stats = pool.stats()
    return {
        "finished": finished,
        "connections": connections,
        "answered": sum(workers.values()),
        "size": size,
        "seconds": round(seconds, 2),
        "violations": violations.count,
        "by_probe": dict(violations.by_probe),
        "examples": violations.examples,
        "workers": len(workers),
        "stats": dataclasses.asdict(stats),
    }


def test_server_clients_never_see_another_clients_values(baseline: None) -> None:
    summary = serve_load(size=SIZE, connections=CONNECTIONS, isolate=True)
    stats = summary["stats"]
    print(
        f"\nStreamServer: {summary['connections']} connections, {CLIENTS} concurrent clients, size {SIZE}, "
        f"{stats['workers_started']} workers (reuse {stats['tasks_started'] / stats['workers_started']:.0f}x), "
        f"violations {summary['violations']}, {summary['seconds']} s"
    )
    assert summary["finished"], summary
    assert summary["answered"] == CONNECTIONS, summary
    assert summary["violations"] == 0, summary
    assert summary["workers"] == stats["workers_started"] <= SIZE, summary
    if CONNECTIONS >= 4 * SIZE:
        assert stats["peak_workers"] == SIZE, stats  # the pool was full
    assert stats["busy"] == 0, stats
    assert stats["tasks_started"] == CONNECTIONS == stats["tasks_completed"], stats
    assert stats["tasks_failed"] == stats["tasks_killed"] == 0, stats


def test_server_without_isolation_leaks_one_clients_values_to_the_next(baseline: None) -> None:
    summary = serve_load(size=20, connections=CONTROL_CONNECTIONS, isolate=False)
    print(f"\nStreamServer, isolate=False: {CONTROL_CONNECTIONS} connections, violations {summary['by_probe']}")
    assert summary["finished"], summary
    assert summary["answered"] == CONTROL_CONNECTIONS, summary
    assert summary["violations"] > 0, summary
    for probe in ("context", "var", "plain", "session"):
        assert summary["by_probe"].get(f"entry:{probe}", 0) > 0, (probe, summary)
