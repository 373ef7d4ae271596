"""detach(): a long-lived task gives its slot back and runs on, within its own limit."""

from __future__ import annotations

from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

import gpool
from gpool import PoolFull, WorkerPool

from ..helpers import connect, exchange, running


def test_a_detached_task_frees_its_slot_and_runs_on() -> None:
    pool = WorkerPool(1)
    detached, release, ran = Event(), Event(), Event()

    def stream() -> None:
        gpool.detach()
        detached.set()
        release.wait()

    pool.spawn(stream)
    assert detached.wait(5)
    stats = pool.stats()
    assert (stats.busy, stats.detached, stats.tasks_detached) == (0, 1, 1)
    assert pool.free_count() == 1 and not pool.full()
    # The one slot is free: a greenlet's spawn runs at once instead of waiting.
    with gevent.Timeout(5):
        pool.spawn(ran.set)
        assert ran.wait(5)
    release.set()
    pool.close()
    assert pool.join(5)
    gevent.sleep(0)
    stats = pool.stats()
    assert (stats.busy, stats.detached, stats.tasks_detached) == (0, 0, 1)
    assert stats.tasks_started == stats.tasks_completed == 2


def test_detach_is_bounded_by_max_detached() -> None:
    pool = WorkerPool(4, max_detached=1)
    release = Event()
    outcomes: list[str] = []

    def stream() -> None:
        try:
            pool.detach()
            outcomes.append("detached")
        except PoolFull as exc:
            outcomes.append(str(exc))
        release.wait()

    pool.spawn(stream)
    pool.spawn(stream)
    gevent.sleep(0)
    assert outcomes[0] == "detached"
    assert outcomes[1] == "detach() refused: max_detached=1 tasks are already detached; this task keeps its slot"
    stats = pool.stats()
    assert (stats.busy, stats.detached) == (1, 1)  # the refused task kept its slot
    release.set()
    assert pool.join(5)


def test_max_detached_defaults_to_size_and_zero_forbids_detaching() -> None:
    pool = WorkerPool(2)
    release = Event()
    refused: list[BaseException] = []

    def stream() -> None:
        try:
            gpool.detach()
            gpool.detach()  # a second call is harmless
        except PoolFull as exc:
            refused.append(exc)
        release.wait()

    for _ in range(3):
        pool.spawn(stream)
        gevent.sleep(0)
    assert len(refused) == 1 and pool.stats().detached == 2
    release.set()
    assert pool.join(5)

    strict = WorkerPool(2, max_detached=0)
    strict.spawn(stream)
    gevent.sleep(0)
    assert len(refused) == 2 and "max_detached=0" in str(refused[1])
    assert strict.join(5)


def test_detach_outside_a_pool_task_is_an_error() -> None:
    pool, other = WorkerPool(1), WorkerPool(1)
    outside = r"gpool\.detach\(\) must be called from inside a task running on a WorkerPool"
    with pytest.raises(RuntimeError, match=outside):
        gpool.detach()
    with pytest.raises(RuntimeError, match=r"detach\(\) must be called from inside a task running on this WorkerPool"):
        pool.detach()
    result = other.submit(pool.detach)  # a task of *another* pool
    with pytest.raises(RuntimeError, match="this WorkerPool"):
        result.get(timeout=5)
    assert pool.stats().detached == 0 and other.stats().detached == 0


def test_join_does_not_wait_for_detached_tasks_but_kill_reaches_them() -> None:
    pool = WorkerPool(2)
    finished = Event()

    def stream() -> None:
        gpool.detach()
        try:
            gevent.sleep(60)
        finally:
            finished.set()

    pool.spawn(stream)
    gevent.sleep(0)
    assert pool.join(timeout=1) is True
    assert not finished.is_set()
    pool.kill(timeout=5)
    assert finished.is_set()
    stats = pool.stats()
    assert (stats.detached, stats.tasks_killed) == (0, 1)


def test_a_finished_detached_task_never_leaves_more_idle_workers_than_free_slots() -> None:
    pool = WorkerPool(1)
    release_stream, release_other = Event(), Event()

    def stream() -> None:
        gpool.detach()
        release_stream.wait()

    pool.spawn(stream)
    gevent.sleep(0)
    pool.spawn(release_other.wait)  # takes the slot the stream gave back
    gevent.sleep(0)
    release_stream.set()
    gevent.sleep(0)
    stats = pool.stats()
    # The stream's worker retired rather than park while the only slot is busy.
    assert (stats.workers, stats.busy, stats.idle, stats.retired) == (1, 1, 0, 1)
    release_other.set()
    assert pool.join(5)
    stats = pool.stats()
    assert (stats.workers, stats.busy, stats.idle) == (1, 0, 1)


def test_a_server_connection_that_detaches_lets_the_next_client_in(baseline: None) -> None:
    streaming, stop = Event(), Event()

    def handle(sock: Any, _address: Any) -> None:
        first = sock.recv(64)
        if first == b"stream\n":
            gpool.detach()  # from here on a long-lived stream
            streaming.set()
            stop.wait()
        sock.sendall(b"done " + first)

    pool = WorkerPool(1)
    with running(StreamServer(("127.0.0.1", 0), handle, spawn=pool)) as server:
        with connect(server) as stream:
            stream.sendall(b"stream\n")
            assert streaming.wait(5)
            assert exchange(server, b"short\n") == b"done short\n"
            stop.set()
            assert stream.recv(64) == b"done stream\n"
        assert pool.stats().tasks_detached == 1
