"""Sustained churn: 100,000 short connections from 200 concurrent clients through
StreamServer + WorkerPool; every client gets its full reply, and afterwards file
descriptors, greenlets and workers are back where they started (plus min_idle)."""

from __future__ import annotations

import time

from gpool import WorkerPool

from ..helpers import live_workers, scaled, wait_until
from .harness import AccountingServer, ErrorRecorder, Handler, run_clients

CONNECTIONS = scaled(100_000, minimum=2_000)
CLIENTS = 200
MIN_IDLE = 4


def test_every_connection_is_answered_and_nothing_leaks(baseline: None) -> None:
    handler = Handler()
    pool = WorkerPool(1000, max_idle=0.5, min_idle=MIN_IDLE)
    server = AccountingServer(("127.0.0.1", 0), handler, spawn=pool, backlog=1024)
    with ErrorRecorder().installed() as errors:
        server.start()
        try:
            started = time.monotonic()
            summary = run_clients(
                server.server_port, connections=CONNECTIONS, concurrency=CLIENTS, timeout=60 + CONNECTIONS / 500
            )
            elapsed = time.monotonic() - started
            wait_until(lambda: pool.stats().busy == 0, what="every task ended")
        finally:
            server.stop(timeout=5)

    # Every client got its full, own reply: no connection dropped, cut or crossed.
    assert summary["outcomes"] == {"ok:ok": CONNECTIONS}, summary
    assert handler.kinds == {"ok": CONNECTIONS}
    assert handler.leaks == []
    assert errors.reports == []

    # Every accepted connection was closed exactly once.
    assert server.accepted == server.closes == CONNECTIONS
    assert server.open == {}
    assert server.closed_again == 0

    stats = pool.stats()
    assert stats.tasks_started == stats.tasks_completed == CONNECTIONS
    assert stats.tasks_failed == stats.tasks_killed == 0
    # The point of the pool: at most one greenlet per concurrent client, each reused
    # many times (a worker is only ever new in place of one culled while idle).
    assert stats.peak_workers <= CLIENTS + MIN_IDLE
    assert stats.workers_started <= stats.peak_workers + stats.culled
    assert stats.tasks_started >= 10 * stats.workers_started
    print(
        f"\nchurn: {CONNECTIONS} connections from {CLIENTS} clients in {elapsed:.1f}s "
        f"({CONNECTIONS / elapsed:,.0f}/s) on {stats.workers_started} worker greenlets "
        f"(peak {stats.peak_workers}); errors 0, leaks 0"
    )

    # Idle workers are culled back to min_idle, then close() ends those too.
    wait_until(lambda: pool.stats().workers == MIN_IDLE, timeout=10, what="idle workers culled to min_idle")
    assert live_workers(pool) == MIN_IDLE
    pool.close()
    assert pool.join(5)
    wait_until(lambda: live_workers(pool) == 0, what="the last workers exited")
