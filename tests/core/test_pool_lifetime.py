"""A pool nobody holds is freed, and its workers exit: they hold it only weakly.

As with CPython's ThreadPoolExecutor, whose threads hold a weak reference to their
executor: a dropped ``WorkerPool`` (with ``min_idle`` workers kept warm or not) must
not live on through its own idle greenlets, nor through a pending cull timer.
"""

from __future__ import annotations

import gc
import weakref

import gevent
import pytest
from gevent.event import Event

from gpool import WorkerPool
from gpool._core.worker import Worker

from ..helpers import wait_until


def live_workers_of(ref: weakref.ReferenceType[WorkerPool]) -> list[Worker]:
    return [o for o in gc.get_objects() if isinstance(o, Worker) and not o.dead and o.pool_ref is ref]


def run_tasks(pool: WorkerPool, count: int) -> None:
    done = [Event() for _ in range(count)]
    release = Event()

    def task(event: Event) -> None:
        event.set()
        release.wait()

    for event in done:
        pool.spawn(task, event)
    for event in done:
        assert event.wait(5)
    release.set()
    assert pool.join(5)


@pytest.mark.parametrize("min_idle", [0, 1, 3])
def test_a_dropped_pool_is_freed_and_its_idle_workers_exit(min_idle: int) -> None:
    pool = WorkerPool(4, min_idle=min_idle, max_idle=60)
    run_tasks(pool, 3)  # three workers, idle now; a cull timer is pending past min_idle
    assert pool.stats().idle == 3
    workers = [w for w in gc.get_objects() if isinstance(w, Worker) and w.owner is pool]
    assert len(workers) == 3
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    # The finalizer hands each idle worker its stop through the hub.
    wait_until(lambda: all(w.dead for w in workers), what="idle workers of a dropped pool exit")
    assert live_workers_of(ref) == []


def test_a_pool_is_kept_while_a_task_runs_and_freed_after() -> None:
    started, release, finished = Event(), Event(), Event()

    def task() -> None:
        started.set()
        release.wait()
        finished.set()

    pool = WorkerPool(2)
    pool.spawn(task)
    assert started.wait(5)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    # The running task's worker holds its pool while the task runs: it must count it.
    held = ref()
    assert held is not None and len(held) == 1
    del held
    release.set()
    assert finished.wait(5)
    gevent.sleep(0)  # the worker parks, letting go of the pool
    gc.collect()
    assert ref() is None


def test_current_pool_and_detach_in_a_task_see_the_pool() -> None:
    from gpool import current_pool, detach

    seen: list[object] = []

    def task() -> None:
        seen.append(current_pool())
        detach()
        seen.append(current_pool().stats().detached)  # type: ignore[union-attr]

    with WorkerPool(1) as pool:
        pool.spawn(task)
        assert pool.join(5)
        wait_until(lambda: len(seen) == 2, what="the task ran")
    assert seen == [pool, 1]
