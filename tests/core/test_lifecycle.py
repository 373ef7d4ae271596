"""join, kill, close and the context manager."""

from __future__ import annotations

import gc
import weakref

import gevent
import pytest
from gevent.event import Event
from greenlet import getcurrent

from gpool import PoolClosed, WorkerPool

from ..helpers import wait_until


class Stop(Exception):
    pass


def test_join_waits_for_running_tasks() -> None:
    pool = WorkerPool(4)
    gate = Event()
    pool.spawn(gate.wait)
    assert pool.join(timeout=0.01) is False
    gevent.get_hub().loop.run_callback(gate.set)
    assert pool.join(timeout=5) is True
    assert pool.join() is True  # nothing running: returns at once


def test_join_raise_error_reraises_a_task_failure() -> None:
    pool = WorkerPool(4, log_all_errors=False)
    gevent.get_hub().handle_error = lambda *args: None  # keep the expected failure quiet
    try:
        gate = Event()

        def fail_later() -> None:
            gate.wait()
            raise Stop("boom")

        pool.spawn(fail_later)
        gevent.get_hub().loop.run_callback(gate.set)
        with pytest.raises(Stop, match="boom"):
            pool.join(timeout=5, raise_error=True)
    finally:
        del gevent.get_hub().handle_error
    assert pool.join(timeout=5)


def test_join_raise_error_ignores_kills_and_normal_ends() -> None:
    pool = WorkerPool(4)

    def leave() -> None:
        raise gevent.GreenletExit

    pool.spawn(Event().wait)
    pool.spawn(leave)
    gevent.sleep(0)
    killer = gevent.spawn(pool.kill, block=False)
    assert pool.join(timeout=5, raise_error=True) is True
    killer.join()
    stats = pool.stats()
    assert (stats.tasks_killed, stats.tasks_completed) == (1, 1)


def test_kill_reaches_running_tasks_and_runs_their_finally() -> None:
    pool = WorkerPool(4)
    cleaned: list[int] = []

    def stuck(n: int) -> None:
        try:
            Event().wait()
        finally:
            cleaned.append(n)

    for n in range(3):
        pool.spawn(stuck, n)
    gevent.sleep(0)
    pool.kill(timeout=5)
    assert sorted(cleaned) == [0, 1, 2]
    assert len(pool) == 0
    stats = pool.stats()
    assert stats.tasks_killed == 3
    assert stats.idle == 3  # the workers survived and are reusable
    assert pool.submit(lambda: "still usable").get(timeout=5) == "still usable"


def test_kill_reaches_a_task_handed_over_but_not_started() -> None:
    pool = WorkerPool(4)
    started: list[bool] = []

    def task() -> None:
        started.append(True)
        Event().wait()

    pool.spawn(task)  # from a greenlet: scheduled, not running yet
    pool.kill(timeout=5)
    assert started == [True]
    assert pool.stats().tasks_killed == 1


def test_kill_never_lands_on_a_later_task_of_the_same_worker() -> None:
    pool = WorkerPool(1)
    first_done, second_gate = Event(), Event()
    second: list[str] = []
    workers: list[object] = []

    def first() -> None:
        workers.append(getcurrent())
        first_done.wait()

    def second_task() -> None:
        workers.append(getcurrent())
        try:
            second_gate.wait()
            second.append("finished")
        except BaseException as exc:
            second.append(f"hit by {type(exc).__name__}")
            raise

    pool.spawn(first)
    gevent.sleep(0)
    # Queue, in the hub's order: the first task ends; the worker takes the second
    # task; then the kill aimed at the first task is delivered.
    first_done.set()
    gevent.get_hub().loop.run_callback(pool.spawn, second_task)
    pool.kill(block=False)
    gevent.sleep(0)
    assert workers[0] is workers[1]  # same greenlet, later task
    second_gate.set()
    assert pool.join(timeout=5)
    assert second == ["finished"]
    assert pool.stats().tasks_killed == 0


def test_kill_with_an_exception_class_counts_kills_without_reporting() -> None:
    pool = WorkerPool(2)
    reported: list[object] = []
    gevent.get_hub().handle_error = lambda *args: reported.append(args)
    try:
        pool.spawn(Event().wait)
        gevent.sleep(0)
        pool.kill(Stop, timeout=5)
    finally:
        del gevent.get_hub().handle_error
    assert reported == []
    assert pool.stats().tasks_killed == 1


def test_kill_block_gives_up_after_timeout() -> None:
    pool = WorkerPool(2)
    release = Event()

    def stubborn() -> None:
        try:
            Event().wait()
        except gevent.GreenletExit:
            release.wait()  # ignores the kill until told

    pool.spawn(stubborn)
    gevent.sleep(0)
    pool.kill(timeout=0.05)
    assert len(pool) == 1
    release.set()
    assert pool.join(timeout=5)
    # It caught the kill and returned normally: still a task the kill ended (as a
    # pywsgi request is, which answers 500 and returns), not a completion.
    assert (pool.stats().tasks_killed, pool.stats().tasks_completed) == (1, 0)


def test_close_is_final_and_leaves_counters_unchanged() -> None:
    pool = WorkerPool(2)
    pool.submit(lambda: None).get(timeout=5)
    pool.close()
    before = pool.stats()
    for method in (pool.spawn, pool.try_spawn, pool.submit):
        with pytest.raises(PoolClosed, match="closed WorkerPool"):
            method(print)
    with pytest.raises(PoolClosed):
        pool.wait_available()
    assert pool.stats() == before
    assert pool.closed and pool.full() and pool.free_count() == 0
    pool.close()  # idempotent


def test_close_retires_idle_workers_and_lets_busy_ones_finish() -> None:
    pool = WorkerPool(4)
    gate = Event()
    refs: list[weakref.ref[object]] = []

    def note(wait: bool) -> None:
        refs.append(weakref.ref(getcurrent()))
        if wait:
            gate.wait()

    pool.spawn(note, False)
    pool.spawn(note, True)
    gevent.sleep(0)
    assert pool.stats().idle == 1
    pool.close()
    wait_until(lambda: pool.stats().workers == 1, what="idle worker exit")
    gate.set()
    assert pool.join(timeout=5)
    wait_until(lambda: pool.stats().workers == 0, what="busy worker exit")
    assert pool.stats().retired == 2
    gevent.sleep(0)
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_close_wakes_greenlets_waiting_for_a_slot() -> None:
    pool = WorkerPool(1)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    waiting = gevent.spawn(pool.spawn, print)
    gevent.sleep(0)
    pool.close()
    with pytest.raises(PoolClosed):
        waiting.get(timeout=5)
    gate.set()
    assert pool.join(timeout=5)


def test_context_manager_closes_and_joins() -> None:
    done: list[int] = []
    with WorkerPool(4) as pool:
        for n in range(4):
            pool.spawn(lambda n=n: (gevent.sleep(0.001), done.append(n)))
    assert sorted(done) == [0, 1, 2, 3]
    assert pool.closed
    assert len(pool) == 0
    # Joined after closing: not even an idle worker is left.
    assert pool.stats().workers == 0


def test_close_then_join_leaves_no_idle_worker() -> None:
    pool = WorkerPool(4, max_idle=60)
    workers = {pool.submit(getcurrent).get(timeout=5) for _ in range(3)}
    assert pool.stats().idle == len(workers) == 1
    pool.close()
    assert pool.join(timeout=5)
    assert pool.stats().workers == 0
    assert all(worker.dead for worker in workers)


def test_pool_is_always_truthy() -> None:
    # gevent servers run `if pool:` before join()/kill() in stop().
    assert bool(WorkerPool(1))
