"""WorkerPool.resize(): the size changes while tasks run, as ants' Tune, eventlet's
resize and Java's setMaximumPoolSize allow.

Growing wakes what waits for a slot (spawn, wait_available, a paused server); shrinking
interrupts nothing, and the ready list never holds more idle workers than free slots.
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from gpool import PoolClosed, WorkerPool
from gpool.metrics import PoolCollector

from ..helpers import FakeClock, connect, live_workers, wait_until


class Blockers:
    """Tasks that hold their slot until released, each saying when it has started."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.release = Event()
        self.started: list[Event] = []
        self.finished = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            started = Event()
            self.started.append(started)
            self.pool.spawn(self._task, started)
        for started in self.started[-count:]:
            assert started.wait(5), "a blocking task did not start"

    def _task(self, started: Event) -> None:
        started.set()
        self.release.wait()
        self.finished += 1


def idle_workers(pool: WorkerPool, count: int) -> None:
    """Leave *count* parked workers on *pool*."""
    blockers = Blockers(pool)
    blockers.start(count)
    blockers.release.set()
    assert pool.join(5)
    assert pool.stats().idle == count


def test_resize_changes_size_full_and_free_count_at_once() -> None:
    pool = WorkerPool(2)
    blockers = Blockers(pool)
    blockers.start(2)
    assert pool.full() and pool.free_count() == 0
    pool.resize(5)
    assert (pool.size, pool.stats().size) == (5, 5)
    assert not pool.full() and pool.free_count() == 3
    pool.resize(1)
    assert pool.size == 1 and pool.full() and pool.free_count() == 0
    pool.resize(None)
    assert pool.size is None and not pool.full() and pool.free_count() == 1  # gevent's unbounded answer
    blockers.release.set()
    assert pool.join(5)
    pool.close()


def test_growing_lets_a_greenlet_waiting_in_spawn_go_on_at_once() -> None:
    pool = WorkerPool(1)
    blockers = Blockers(pool)
    blockers.start(1)
    ran = Event()
    waiting = gevent.spawn(pool.spawn, ran.set)
    wait_until(lambda: pool._signal.waiting, what="the spawn() caller waits for a slot")
    pool.resize(2)
    assert ran.wait(5), "the task waiting in spawn() did not run after the pool grew"
    waiting.join(5)
    assert waiting.successful()
    assert blockers.finished == 0  # the first task still runs: nothing waited for it
    blockers.release.set()
    assert pool.join(5)
    pool.close()


def test_growing_wakes_every_waiter_it_has_room_for_and_no_more() -> None:
    pool = WorkerPool(1)
    blockers = Blockers(pool)
    blockers.start(1)
    ran: list[int] = []

    def task(n: int) -> None:
        ran.append(n)
        blockers.release.wait()

    spawners = [gevent.spawn(pool.spawn, task, n) for n in range(3)]
    wait_until(lambda: len(pool._signal._links) == 3, what="three spawn() callers wait")
    pool.resize(3)  # room for two more
    wait_until(lambda: len(ran) == 2, what="two waiting tasks run")
    assert len(pool) == 3 and sum(s.dead for s in spawners) == 2
    assert pool._signal.waiting  # the third still waits, for a slot that is not there
    blockers.release.set()
    gevent.joinall(spawners, timeout=5)
    assert all(s.successful() for s in spawners)
    assert pool.join(5)
    assert sorted(ran) == [0, 1, 2]
    pool.close()


def test_growing_wakes_wait_available() -> None:
    pool = WorkerPool(1)
    blockers = Blockers(pool)
    blockers.start(1)
    waiter = gevent.spawn(pool.wait_available)
    wait_until(lambda: pool._signal.waiting, what="wait_available() waits")
    pool.resize(3)
    assert waiter.get(timeout=5) == 2
    blockers.release.set()
    assert pool.join(5)
    pool.close()


def test_shrinking_interrupts_no_task_and_surplus_workers_retire_as_they_finish() -> None:
    pool = WorkerPool(4, max_idle=60)
    blockers = Blockers(pool)
    blockers.start(4)
    retired_before = pool.stats().retired
    pool.resize(2)
    assert len(pool) == 4 and pool.full()  # nothing was interrupted
    blockers.release.set()
    assert pool.join(5)
    assert blockers.finished == 4
    stats = pool.stats()
    # Two workers could park (one per free slot); the other two retired.
    assert stats.idle == 2 and stats.workers == 2
    assert stats.retired - retired_before == 2
    assert live_workers(pool) == 2
    pool.close()


def test_shrinking_retires_idle_workers_beyond_the_free_slots_coldest_first() -> None:
    pool = WorkerPool(5, max_idle=60)
    clock = FakeClock()
    pool._set_clock(clock)
    idle_workers(pool, 5)
    order = list(pool._ready)  # coldest first
    pool.resize(2)
    assert list(pool._ready) == order[-2:], "the two hottest workers should stay"
    wait_until(lambda: live_workers(pool) == 2, what="three idle workers retire")
    stats = pool.stats()
    assert (stats.idle, stats.workers) == (2, 2)
    # The hottest worker still takes the next task.
    ran_on: list[Any] = []
    pool.spawn(lambda: ran_on.append(gevent.getcurrent()))
    assert pool.join(5)
    assert ran_on == [order[-1]]
    pool.close()


def test_shrinking_below_the_running_tasks_keeps_new_tasks_out_until_there_is_room() -> None:
    pool = WorkerPool(3, max_idle=60)
    first = Blockers(pool)
    first.start(3)
    pool.resize(1)
    assert pool.full() and not pool.try_spawn(lambda: None)
    first.release.set()
    assert pool.join(5)
    # One slot now, one idle worker standing for it.
    assert (pool.stats().idle, pool.free_count()) == (1, 1)
    second = Blockers(pool)
    second.start(1)
    assert pool.full() and not pool.try_spawn(lambda: None)
    second.release.set()
    assert pool.join(5)
    pool.close()


def test_a_shrunk_pool_that_grows_back_parks_workers_again() -> None:
    pool = WorkerPool(4, max_idle=60)
    blockers = Blockers(pool)
    blockers.start(4)
    pool.resize(1)
    pool.resize(4)
    blockers.release.set()
    assert pool.join(5)
    assert pool.stats().idle == 4  # room for all of them again: none retired
    pool.close()


def test_unbounded_both_ways() -> None:
    pool = WorkerPool(None, max_idle=60)
    blockers = Blockers(pool)
    blockers.start(5)
    pool.resize(2)
    assert pool.full()
    pool.resize(None)
    assert not pool.full()
    blockers.start(1)
    assert len(pool) == 6
    blockers.release.set()
    assert pool.join(5)
    assert pool.stats().idle == 6
    pool.close()


def test_min_idle_above_the_new_size_keeps_at_most_size_idle_then_applies_again() -> None:
    pool = WorkerPool(4, min_idle=3, max_idle=1.0)
    clock = FakeClock()
    pool._set_clock(clock)
    idle_workers(pool, 4)
    pool.resize(2)
    assert pool.stats().idle == 2
    clock.advance(5)
    pool._cull()
    assert pool.stats().idle == 2  # min_idle=3 keeps both, as many as the size allows
    pool.resize(4)
    idle_workers(pool, 4)
    clock.advance(5)
    pool._cull()
    assert pool.stats().idle == 3  # min_idle applies in full again
    pool.close()


def test_max_detached_follows_the_size_unless_given() -> None:
    followed = WorkerPool(2)
    followed.resize(5)
    assert followed._count.max_detached == 5
    given = WorkerPool(2, max_detached=1)
    given.resize(5)
    assert given._count.max_detached == 1
    unbounded = WorkerPool(2)
    unbounded.resize(None)
    assert unbounded._count.max_detached is None


class HoldingServer:
    """A StreamServer on *pool* whose handler answers ``ok`` to a client's first bytes,
    records them, then holds its slot until released."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.release = Event()
        self.served: list[bytes] = []
        self.clients: list[Any] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle, spawn=pool)

    def _handle(self, sock: Any, _address: Any) -> None:
        self.served.append(sock.recv(16))
        sock.sendall(b"ok")
        self.release.wait()

    def client(self, greeting: bytes) -> Any:
        sock = connect(self.server)
        self.clients.append(sock)
        sock.sendall(greeting)
        return sock

    def __enter__(self) -> HoldingServer:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        for sock in self.clients:
            sock.close()
        self.server.stop()
        self.pool.close()


def test_growing_resumes_a_stream_server_paused_on_a_full_pool() -> None:
    pool = WorkerPool(1)
    with HoldingServer(pool) as holding:
        holding.client(b"one")
        wait_until(lambda: holding.served == [b"one"], what="the first client is served")
        second = holding.client(b"two")
        # The pool is full: the server stops accepting and waits on the pool.
        wait_until(lambda: pool._signal.waiting, what="the server pauses on the full pool")
        assert holding.served == [b"one"]
        pool.resize(2)
        # No new connection arrives: the waiting client is accepted on the wake-up.
        assert second.recv(2) == b"ok"
        assert holding.served == [b"one", b"two"]
        holding.release.set()
        assert pool.join(5)


def test_shrinking_a_server_pool_pauses_accepting_and_growing_resumes() -> None:
    pool = WorkerPool(2)
    with HoldingServer(pool) as holding:
        holding.client(b"one")
        wait_until(lambda: holding.served == [b"one"], what="the first client is served")
        pool.resize(1)  # full now
        second = holding.client(b"two")
        wait_until(lambda: pool._signal.waiting, what="the server pauses on the shrunk pool")
        assert holding.served == [b"one"]
        pool.resize(2)
        assert second.recv(2) == b"ok"
        holding.release.set()
        assert pool.join(5)


def test_the_prometheus_collector_follows_the_size() -> None:
    pytest.importorskip("prometheus_client")
    pool = WorkerPool(3)
    collector = PoolCollector(pool, name="resized")

    def size_sample() -> float:
        for family in collector.collect():
            if family.name.endswith("_size"):
                return float(family.samples[0].value)
        raise AssertionError("no size gauge")

    assert size_sample() == 3
    pool.resize(7)
    assert size_sample() == 7
    pool.resize(None)
    assert size_sample() == float("inf")


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (0, ValueError, "size must be None or an int >= 1, got 0"),
        (-3, ValueError, "size must be None or an int >= 1, got -3"),
        (2.5, TypeError, "size must be None or an int >= 1, got 2.5 (float)"),
        ("10", TypeError, "size must be None or an int >= 1, got '10' (str)"),
        (True, TypeError, "size must be None or an int >= 1, got True (bool)"),
    ],
)
def test_bad_sizes_are_refused_as_the_constructor_refuses_them_and_change_nothing(
    value: object, error: type[Exception], words: str
) -> None:
    pool = WorkerPool(4)
    idle_workers(pool, 2)
    with pytest.raises(error) as refused:
        pool.resize(value)  # type: ignore[arg-type]
    assert str(refused.value) == words
    with pytest.raises(error) as built:
        WorkerPool(value)  # type: ignore[arg-type]
    assert str(built.value) == str(refused.value)
    assert (pool.size, pool.stats().idle, pool.free_count()) == (4, 2, 4)
    pool.close()


def test_resize_after_close_raises_pool_closed() -> None:
    pool = WorkerPool(2)
    pool.close()
    with pytest.raises(PoolClosed, match=r"resize\(\) called on a closed WorkerPool"):
        pool.resize(3)
    assert pool.size == 2


def test_resize_while_culling_keeps_the_counts_straight() -> None:
    pool = WorkerPool(6, max_idle=1.0)
    clock = FakeClock()
    pool._set_clock(clock)
    idle_workers(pool, 6)
    clock.advance(5)
    pool.resize(3)  # three retire for want of slots...
    pool._cull()  # ...and culling takes the rest, each worker once
    wait_until(lambda: live_workers(pool) == 0, what="every worker exits")
    stats = pool.stats()
    assert stats.retired + stats.culled == 6 and stats.idle == 0 and stats.workers == 0
    pool.close()


def test_resize_from_a_running_task() -> None:
    pool = WorkerPool(1)
    ran = Event()

    def grow_then_spawn() -> None:
        pool.resize(2)
        pool.spawn(ran.set)  # a slot is free now: no PoolFull

    pool.spawn(grow_then_spawn)
    assert ran.wait(5)
    assert pool.join(5)
    pool.close()


def test_shrinking_from_inside_a_task_leaves_that_task_running() -> None:
    pool = WorkerPool(2, max_idle=60)
    finished = Event()

    def shrink() -> None:
        pool.resize(1)
        gevent.sleep(0)  # yields: still running, not interrupted
        finished.set()

    other = Blockers(pool)
    other.start(1)
    pool.spawn(shrink)
    assert finished.wait(5)
    other.release.set()
    assert pool.join(5)
    # Of the two workers, one parks (one slot) and the other retires.
    assert (pool.stats().idle, pool.stats().workers) == (1, 1)
    pool.close()
