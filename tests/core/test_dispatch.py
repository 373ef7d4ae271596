"""Hand-off: LIFO reuse, switching from the hub, capacity, waiting and try_spawn."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import gevent
import pytest
from gevent.event import Event
from greenlet import getcurrent

from gpool import PoolFull, WorkerPool

from ..helpers import in_hub, wait_until


def test_most_recently_released_worker_runs_next_task() -> None:
    pool = WorkerPool(10)
    gates = [Event() for _ in range(3)]
    workers: list[object] = []

    def hold(gate: Event) -> None:
        workers.append(getcurrent())
        gate.wait()

    for gate in gates:
        pool.spawn(hold, gate)
    gevent.sleep(0)
    assert len(set(workers)) == 3
    # Release them in the order 0, 2, 1: worker 1 is then the hottest.
    for index in (0, 2, 1):
        gates[index].set()
        gevent.sleep(0)
    assert pool.stats().idle == 3

    ran_on: list[object] = []
    pool.spawn(lambda: ran_on.append(getcurrent()))
    pool.join()
    assert ran_on == [workers[1]]
    # And the worker released before it comes next.
    gate = Event()
    pool.spawn(gate.wait)  # takes the hottest, worker 1, and holds it
    pool.spawn(lambda: ran_on.append(getcurrent()))
    gate.set()
    pool.join()
    assert ran_on[-1] == workers[2]
    assert pool.stats().workers_started == 3


def test_spawn_in_hub_switches_straight_into_the_worker() -> None:
    pool = WorkerPool(4)
    order: list[str] = []

    def spawn_then_note() -> None:
        pool.spawn(order.append, "task ran")
        order.append("spawn returned")

    in_hub(spawn_then_note)  # a new worker
    pool.join()
    in_hub(spawn_then_note)  # an idle worker, through its channel
    pool.join()
    assert order == ["task ran", "spawn returned"] * 2
    assert pool.stats().workers_started == 1


def test_spawn_from_a_greenlet_does_not_switch() -> None:
    pool = WorkerPool(4)
    ran: list[int] = []
    pool.spawn(ran.append, 1)
    assert ran == []  # scheduled, not run: the caller kept running
    assert len(pool) == 1  # but the slot is already taken
    assert pool.join(timeout=5)
    assert ran == [1]
    assert len(pool) == 0


def test_arguments_and_keywords_reach_the_task() -> None:
    pool = WorkerPool()
    seen: list[object] = []
    pool.spawn(lambda *a, **k: seen.append((a, k)), 1, 2, x=3)
    pool.join()
    assert seen == [((1, 2), {"x": 3})]


def test_size_caps_concurrency() -> None:
    pool = WorkerPool(2)
    gate = Event()
    for _ in range(2):
        pool.spawn(gate.wait)
    gevent.sleep(0)
    assert pool.full()
    assert pool.free_count() == 0
    assert len(pool) == 2
    assert pool.try_spawn(gate.wait) is False
    assert pool.stats().workers == 2
    gate.set()
    assert pool.join(timeout=5)
    assert not pool.full()
    assert pool.free_count() == 2


def test_spawn_waits_for_a_slot_in_a_greenlet() -> None:
    pool = WorkerPool(1)
    gate = Event()
    ran: list[str] = []
    pool.spawn(gate.wait)
    gevent.sleep(0)

    spawner = gevent.spawn(pool.spawn, ran.append, "second")
    wait_until(lambda: pool._semaphore.waiting, what="the spawner waiting for a slot")
    assert not spawner.ready()  # still waiting for the slot
    assert ran == []
    gate.set()
    spawner.join(timeout=5)
    assert spawner.successful()
    assert pool.join(timeout=5)
    assert ran == ["second"]
    assert pool.stats().workers_started == 1


def test_spawn_in_the_hub_while_full_raises_pool_full_and_changes_nothing() -> None:
    pool = WorkerPool(1)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    before = pool.stats()
    with pytest.raises(PoolFull, match="in the hub"):
        in_hub(lambda: pool.spawn(lambda: None))
    assert pool.stats() == before
    assert in_hub(lambda: pool.try_spawn(lambda: None)) is False
    gate.set()
    assert pool.join(timeout=5)


def test_spawn_from_own_task_while_full_raises_instead_of_deadlocking() -> None:
    pool = WorkerPool(1)
    result = pool.submit(pool.spawn, lambda: None)
    with pytest.raises(PoolFull, match="own tasks"):
        result.get(timeout=5)
    # try_spawn is the way to ask from inside a task.
    assert pool.submit(pool.try_spawn, lambda: None).get(timeout=5) is False
    assert pool.join(timeout=5)


def test_spawn_from_own_task_with_a_free_slot_works() -> None:
    pool = WorkerPool(2)
    done = Event()
    pool.spawn(pool.spawn, done.set)
    assert done.wait(timeout=5)


def test_wait_available() -> None:
    pool = WorkerPool(1)
    assert pool.wait_available() == 1
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    assert pool.wait_available(timeout=0.01) == 0
    waiter = gevent.spawn(pool.wait_available)
    gevent.sleep(0)
    gate.set()
    assert waiter.get(timeout=5) == 1


def test_submit_returns_result_and_exception() -> None:
    pool = WorkerPool(2)
    assert pool.submit(lambda a, b: a + b, 2, b=3).get(timeout=5) == 5
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=5)
    pool.join()
    stats = pool.stats()
    assert (stats.tasks_completed, stats.tasks_failed) == (1, 1)


def test_unbounded_pool_grows_with_demand() -> None:
    pool = WorkerPool()
    gate = Event()
    for _ in range(50):
        pool.spawn(gate.wait)
    gevent.sleep(0)
    assert not pool.full()
    assert pool.free_count() == 1  # as gevent.pool.Pool answers for size=None
    assert len(pool) == 50
    gate.set()
    assert pool.join(timeout=5)
    assert pool.stats().peak_workers == 50


def test_a_worker_makes_its_channel_when_it_first_parks() -> None:
    # A Channel is 1,600 bytes: workers busy on the connections of a burst (10,000 held
    # at once, say) must not each carry one before they ever wait on it.
    pool = WorkerPool(10)
    gate = Event()
    workers: list[Any] = []

    def hold() -> None:
        workers.append(getcurrent())
        gate.wait()

    for _ in range(5):
        pool.spawn(hold)
    gevent.sleep(0)
    assert [worker.channel for worker in workers] == [None] * 5
    gate.set()
    pool.join()
    gevent.sleep(0)
    # Each parked worker waits on a channel of its own, and tasks reach it there.
    assert len({id(worker.channel) for worker in workers if worker.channel is not None}) == 5
    ran_on: list[Any] = []
    for _ in range(5):
        pool.spawn(lambda: ran_on.append(getcurrent()))
    pool.join()
    assert set(ran_on) == set(workers)
    assert pool.stats().workers_started == 5


def test_pool_attributes_are_slots() -> None:
    # spawn() and the worker loop read a dozen pool attributes per task; in an instance
    # dict of this size each read is a dict lookup. An attribute left out of __slots__
    # fails in __init__; this catches __slots__ itself being dropped, or a base class
    # (or subclass in gpool) bringing a __dict__ back.
    pool = WorkerPool(4)
    assert not hasattr(pool, "__dict__")
    pool.spawn(lambda: None)
    pool.join()


def test_an_idle_worker_keeps_nothing_of_its_first_task() -> None:
    # The first task reaches a new worker some other way than as switch() arguments,
    # which greenlet holds until the worker exits: a client's socket would stay alive.
    class Argument:
        pass

    pool = WorkerPool(4)
    for _ in range(2):  # the task a new worker starts with, then one on its channel
        argument = Argument()
        ref = weakref.ref(argument)
        pool.spawn(lambda _arg: None, argument)
        del argument
        pool.join()
        gevent.sleep(0)
        gc.collect()
        assert ref() is None
    assert pool.stats().workers == 1
