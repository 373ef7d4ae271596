"""Faults under load: clients that reset mid-request or never send, handlers that raise
or hang until the hard deadline kills them, and ``server.stop()`` with requests in
flight. Every accepted connection is closed exactly once, no exception reaches another
task, and the pool's stats add up."""

from __future__ import annotations

from typing import Any

import gevent

from gpool import WorkerPool
from gpool._core.worker import Worker

from ..helpers import scaled, wait_until
from .clients import kind_of
from .harness import AccountingServer, ErrorRecorder, Handler, HandlerFault, run_clients

CLIENTS = 200
# A task's hard deadline counts from when it starts, and a task starts at accept,
# before its client has sent anything: like the handler's READ_TIMEOUT, it must sit
# well above how long a loaded machine may keep the client process from running,
# or a well-behaved client is killed mid-request. Only the hung handlers reach it.
HARD_DEADLINE = 3.0
# How long stop() lets hung requests run before it kills them.
KILL_AFTER = 0.5
# Per 100 connections; the other 83 are well-behaved.
MIX = {"raise": 10, "reset": 5, "silent": 1, "hang": 1}


def assert_closed_exactly_once(server: AccountingServer) -> None:
    assert server.closes == server.accepted
    assert server.open == {}
    assert server.closed_again == 0


def assert_stats_add_up(pool: WorkerPool, accepted: int) -> None:
    stats = pool.stats()
    assert stats.busy == 0
    assert stats.tasks_started == accepted
    assert stats.tasks_started == stats.tasks_completed + stats.tasks_failed + stats.tasks_killed, stats


def shut(pool: WorkerPool) -> None:
    pool.close()
    assert pool.join(5)


def test_faults_mixed_into_load(baseline: None) -> None:
    connections = scaled(20_000, minimum=1_000)
    expected = {kind: [i for i in range(connections) if kind_of(i, MIX) == kind] for kind in [*MIX, "ok"]}
    handler = Handler()
    # Fewer slots than clients: the backlog path is exercised as well.
    pool = WorkerPool(128, hard_deadline=HARD_DEADLINE)
    server = AccountingServer(("127.0.0.1", 0), handler, spawn=pool, backlog=1024)
    with ErrorRecorder().installed() as errors:
        server.start()
        try:
            summary = run_clients(
                server.server_port, connections=connections, concurrency=CLIENTS, mix=MIX, timeout=120
            )
            wait_until(lambda: pool.stats().busy == 0, what="every task ended")
        finally:
            server.stop(timeout=5)

    # What each client saw: replies in full for the well-behaved, a clean close for
    # the rest (the reset ones hung up themselves). Nobody was left hanging.
    assert summary["outcomes"] == {
        "ok:ok": len(expected["ok"]),
        "raise:closed": len(expected["raise"]),
        "hang:closed": len(expected["hang"]),
        "silent:closed": len(expected["silent"]),
        "reset:reset": len(expected["reset"]),
    }, summary
    assert handler.leaks == []

    # Each raised exception was reported once, for the task that raised it.
    assert all(isinstance(context, Worker) for context, _ in errors.reports)
    assert sorted(exc.args[0] for _, exc in errors.reports if isinstance(exc, HandlerFault)) == expected["raise"]
    assert len(errors.reports) == len(expected["raise"]), [exc for _, exc in errors.reports][:5]

    assert server.accepted == connections
    assert_closed_exactly_once(server)
    assert_stats_add_up(pool, server.accepted)
    stats = pool.stats()
    assert stats.tasks_killed == stats.tasks_timed_out == len(expected["hang"])
    # Silent clients time out (a failure, logged at DEBUG); a reset one fails or ends
    # quietly depending on whether its bytes or its RST are read first.
    assert len(expected["raise"]) + len(expected["silent"]) <= stats.tasks_failed
    assert stats.tasks_failed <= len(expected["raise"]) + len(expected["silent"]) + len(expected["reset"])
    # A killed task's worker retires; the others were reused.
    assert stats.retired == len(expected["hang"])
    print(
        f"\nfaults: {connections} connections from {CLIENTS} clients; injected {len(expected['raise'])} raising "
        f"handlers, {len(expected['reset'])} resets, {len(expected['silent'])} silent clients, "
        f"{len(expected['hang'])} hung handlers killed; {stats.tasks_failed} failed tasks, "
        f"{stats.tasks_killed} killed; closed twice 0, leaks 0"
    )
    shut(pool)


def stop_under_load(work: float, mix: dict[str, int], stop_timeout: float, enough: int) -> tuple[Any, ...]:
    """Serve clients until *enough* connections were accepted, then stop the server."""
    handler = Handler(work=work)
    pool = WorkerPool(1000)
    server = AccountingServer(("127.0.0.1", 0), handler, spawn=pool, backlog=1024)
    server.enough = enough

    def stop_when_busy() -> None:
        server.accepted_enough.wait()
        server.stop(timeout=stop_timeout)

    with ErrorRecorder().installed() as errors:
        server.start()
        stopper = gevent.spawn(stop_when_busy)
        try:
            summary = run_clients(server.server_port, concurrency=CLIENTS, mix=mix, timeout=60, until_refused=True)
            stopper.join(10)
        finally:
            stopper.kill()
            server.stop(timeout=5)
    assert errors.reports == []
    return handler, pool, server, summary["outcomes"]


def test_stop_under_load_answers_every_accepted_connection(baseline: None) -> None:
    # Requests take 10 ms and stop() gives them 5 s: every request the server accepted
    # must be answered in full; the clients still in the listen queue are turned away.
    handler, pool, server, outcomes = stop_under_load(
        work=0.01, mix={}, stop_timeout=5, enough=scaled(3_000, minimum=500)
    )
    assert set(outcomes) <= {"ok:ok", "ok:cut", "ok:refused"}, outcomes
    assert outcomes["ok:ok"] == server.accepted >= server.enough
    assert outcomes.get("ok:refused", 0) >= 1  # the clients ran until the server was gone
    assert handler.leaks == []
    assert_closed_exactly_once(server)
    assert_stats_add_up(pool, server.accepted)
    assert pool.stats().tasks_completed == server.accepted
    shut(pool)


def test_stop_under_load_kills_what_outlives_the_timeout(baseline: None) -> None:
    # One request in twenty hangs; stop() waits 0.5 s, then kills them all. A client
    # stays in its hung request until then, so all of them are stuck after about
    # 20 x CLIENTS connections: the stop must come well before (not scaled).
    handler, pool, server, outcomes = stop_under_load(
        work=0.0, mix={"hang": 5}, stop_timeout=KILL_AFTER, enough=CLIENTS * 20 // 4
    )
    hung = handler.kinds["hang"]
    assert hung >= 1
    assert set(outcomes) <= {"ok:ok", "ok:cut", "ok:refused", "hang:closed", "hang:refused"}, outcomes
    # Every hung client saw its connection closed (and so did any still in the listen
    # queue when the listener closed, which were never accepted).
    assert outcomes["hang:closed"] >= hung
    assert outcomes["ok:ok"] == handler.kinds["ok"]
    assert_closed_exactly_once(server)
    assert_stats_add_up(pool, server.accepted)
    stats = pool.stats()
    assert stats.tasks_killed == hung
    assert stats.tasks_completed == handler.kinds["ok"]
    shut(pool)
