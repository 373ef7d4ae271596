"""Idle workers are retired after max_idle, coldest first; the recycle limit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import gevent
from gevent.event import Event
from greenlet import getcurrent

from gpool import WorkerPool

from ..conftest import live_workers, wait_until


def start_workers(pool: WorkerPool, count: int) -> list[weakref.ref[object]]:
    """Run *count* overlapping tasks; return weak references to their workers."""
    gate = Event()
    refs: list[weakref.ref[object]] = []

    def hold() -> None:
        refs.append(weakref.ref(getcurrent()))
        gate.wait()

    for _ in range(count):
        pool.spawn(hold)
    gevent.sleep(0)
    gate.set()
    assert pool.join(timeout=5)
    return refs


def test_idle_workers_are_culled_and_their_greenlets_freed() -> None:
    pool = WorkerPool(10, max_idle=0.05)
    refs = start_workers(pool, 5)
    assert pool.stats().idle == 5
    assert live_workers(pool) == 5
    wait_until(lambda: pool.stats().workers == 0, what="culling")
    stats = pool.stats()
    assert (stats.idle, stats.culled, stats.retired) == (0, 5, 0)
    assert [ref() for ref in refs] == [None] * 5
    assert live_workers(pool) == 0
    # Nothing idle, so nothing is scheduled: the culler does not wake periodically.
    assert pool._cull_timer is None


def test_culling_stops_at_min_idle_and_keeps_the_hottest() -> None:
    pool = WorkerPool(10, max_idle=0.05, min_idle=2)
    refs = start_workers(pool, 5)
    # Workers park in release order; make the release order explicit by reusing two.
    hot: list[object] = []
    pool.submit(lambda: hot.append(getcurrent())).get(timeout=5)
    wait_until(lambda: pool.stats().culled == 3, what="culling down to min_idle")
    gevent.sleep(0.1)  # two more max_idle periods: nothing else may go
    stats = pool.stats()
    assert (stats.workers, stats.idle, stats.culled) == (2, 2, 3)
    alive = [ref() for ref in refs if ref() is not None]
    assert hot[0] in alive
    # With no worker above min_idle, no cull timer is armed: nothing wakes periodically.
    assert pool._cull_timer is None


def test_workers_in_use_are_not_culled() -> None:
    pool = WorkerPool(4, max_idle=0.05)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0.15)
    assert pool.stats().workers == 1
    gate.set()
    assert pool.join(timeout=5)
    wait_until(lambda: pool.stats().workers == 0, what="culling after release")


def test_culled_pool_starts_new_workers_on_demand() -> None:
    pool = WorkerPool(4, max_idle=0.05)
    start_workers(pool, 2)
    wait_until(lambda: pool.stats().workers == 0, what="culling")
    assert pool.submit(lambda: "fresh").get(timeout=5) == "fresh"
    assert pool.stats().workers_started == 3


def test_recycle_limit_retires_a_worker_after_n_tasks() -> None:
    pool = WorkerPool(1, max_tasks_per_worker=2)
    seen: list[weakref.ref[object]] = []
    for _ in range(5):
        pool.submit(lambda: seen.append(weakref.ref(getcurrent()))).get(timeout=5)
    greenlets = [ref() for ref in seen]
    # Tasks 1-2 on one worker, 3-4 on the next, 5 on a third.
    assert greenlets[0] is None and greenlets[2] is None
    assert greenlets[4] is not None
    assert seen[0] == seen[1] and seen[2] == seen[3]
    stats = pool.stats()
    assert (stats.workers_started, stats.retired, stats.workers) == (3, 2, 1)


def test_pending_cull_does_not_keep_the_loop_alive() -> None:
    # With workers idle and a cull 60 s away, gevent.wait() must return at once.
    script = textwrap.dedent(
        """
        import time, gevent
        from gpool import WorkerPool
        pool = WorkerPool(4, max_idle=60)
        pool.submit(gevent.sleep, 0).get()
        started = time.monotonic()
        gevent.wait(timeout=30)
        print(round(time.monotonic() - started, 1), pool.stats().idle)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.0", "1"]


def test_a_dropped_pool_frees_itself_once_its_workers_are_culled() -> None:
    def use_and_drop() -> tuple[weakref.ref[WorkerPool], weakref.ref[object]]:
        pool = WorkerPool(4, max_idle=0.05)
        worker = pool.submit(lambda: weakref.ref(getcurrent())).get(timeout=5)
        return weakref.ref(pool), worker

    pool, worker = use_and_drop()

    # Its parked worker keeps it alive for now; culling lets both go.
    def freed() -> bool:
        gc.collect()
        return pool() is None and worker() is None

    wait_until(freed, what="dropped pool and its worker freed")
