"""Idle workers are retired after max_idle, coldest first; the recycle limit.

Most culling tests run on a :class:`~tests.helpers.FakeClock` (``pool._set_clock``)
and run the cull timer's callback by hand (``pool._cull()``, in the hub as the timer
runs it): what is culled, and when, is then decided by the test, not by how busy the
machine is. With a long max_idle the real timer the pool arms never comes due during
a test; if it did, it would read the same fake clock and change nothing.

Two tests stay on the real clock and the real libev timer, to prove the timer is
armed, fires and re-arms by itself: ``test_idle_workers_are_culled_and_their_greenlets_freed``
and ``test_a_dropped_pool_frees_itself_once_its_workers_are_culled`` (a dropped pool
can only be culled by its timer). ``test_pending_cull_does_not_keep_the_loop_alive``
checks, in a subprocess, that a pending real timer does not hold the loop.
"""

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

from ..helpers import FakeClock, in_hub, live_workers, wait_until

# Long enough that the real cull timer never comes due while a fake-clock test runs.
MAX_IDLE = 60.0


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


def on_fake_clock(size: int, **kwargs: object) -> tuple[WorkerPool, FakeClock]:
    pool = WorkerPool(size, max_idle=MAX_IDLE, **kwargs)  # type: ignore[arg-type]
    clock = FakeClock()
    pool._set_clock(clock)
    return pool, clock


def cull(pool: WorkerPool) -> None:
    """Run the cull timer's callback now, in the hub, as the timer would."""
    in_hub(pool._cull)


def test_culling_stops_at_min_idle_and_keeps_the_hottest() -> None:
    pool, clock = on_fake_clock(10, min_idle=2)
    refs = start_workers(pool, 5)
    # Workers park in release order; make the release order explicit by reusing two.
    hot: list[object] = []
    pool.submit(lambda: hot.append(getcurrent())).get(timeout=5)
    clock.advance(MAX_IDLE + 1)
    cull(pool)
    stats = pool.stats()
    assert (stats.workers, stats.idle, stats.culled) == (2, 2, 3)
    alive = [ref() for ref in refs if ref() is not None]
    assert hot[0] in alive
    # With no worker above min_idle, no cull timer is armed: nothing wakes periodically,
    # so nothing else can go however long the pool idles...
    assert pool._cull_timer is None
    # ... and a cull that ran anyway, much later, keeps min_idle too.
    clock.advance(100 * MAX_IDLE)
    cull(pool)
    stats = pool.stats()
    assert (stats.workers, stats.idle, stats.culled) == (2, 2, 3)
    assert pool._cull_timer is None


def test_only_workers_idle_longer_than_max_idle_are_culled_and_the_culler_rearms() -> None:
    pool, clock = on_fake_clock(4)
    gates = [Event(), Event()]
    for gate in gates:
        pool.spawn(gate.wait)
    gevent.sleep(0)
    gates[0].set()  # the first worker parks at t0...
    wait_until(lambda: pool.stats().idle == 1, what="the first worker parked")
    clock.advance(MAX_IDLE / 2)
    gates[1].set()  # ... the second half a max_idle later
    assert pool.join(timeout=5)
    assert pool.stats().idle == 2

    clock.advance(MAX_IDLE / 2 - 0.01)
    cull(pool)  # neither has idled max_idle yet
    assert (pool.stats().idle, pool.stats().culled) == (2, 0)
    assert pool._cull_timer is not None  # re-armed for the oldest

    clock.advance(0.02)
    cull(pool)  # the first has; the second has idled half as long
    assert (pool.stats().idle, pool.stats().culled) == (1, 1)
    assert pool._cull_timer is not None  # re-armed for the second

    clock.advance(MAX_IDLE / 2)
    cull(pool)
    assert (pool.stats().workers, pool.stats().culled) == (0, 2)
    assert pool._cull_timer is None


def test_workers_in_use_are_not_culled() -> None:
    pool, clock = on_fake_clock(4)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    clock.advance(10 * MAX_IDLE)
    cull(pool)
    assert (pool.stats().workers, pool.stats().culled) == (1, 0)
    gate.set()
    assert pool.join(timeout=5)
    # Idle from its release, not from its start: not culled until max_idle after it.
    clock.advance(MAX_IDLE - 0.01)
    cull(pool)
    assert (pool.stats().workers, pool.stats().culled) == (1, 0)
    clock.advance(0.02)
    cull(pool)
    assert (pool.stats().workers, pool.stats().culled) == (0, 1)


def test_culled_pool_starts_new_workers_on_demand() -> None:
    pool, clock = on_fake_clock(4)
    start_workers(pool, 2)
    clock.advance(MAX_IDLE + 1)
    cull(pool)
    assert pool.stats().workers == 0
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
