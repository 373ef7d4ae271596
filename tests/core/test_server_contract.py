"""The parts of the pool gevent servers touch directly, pinned down one by one.

gevent's BaseServer calls ``pool._semaphore.rawlink(cb)`` when built and each time it
pauses accepting, ``unlink(cb)`` when closed, ``full()`` before every accept, and in
``stop()``: ``if pool: pool.join(timeout); pool.kill(block=True, timeout=1)``.
gunicorn's gevent workers poll ``free_count() != size`` while draining.
"""

from __future__ import annotations

from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer
from greenlet import getcurrent

from gpool import WorkerPool

from ..helpers import in_hub


def test_link_fires_once_in_the_hub_with_one_argument_when_a_slot_is_free() -> None:
    pool = WorkerPool(1)
    calls: list[tuple[Any, ...]] = []
    fired = Event()

    def link(*args: Any) -> None:
        calls.append((args, getcurrent() is gevent.get_hub()))
        fired.set()

    pool._semaphore.rawlink(link)
    assert fired.wait(timeout=5)
    assert calls == [((pool._semaphore,), True)]
    # A later link fires on a later pass over the waiting callbacks: the first, had
    # it stayed linked, would have fired again with it.
    later = Event()
    pool._semaphore.rawlink(lambda _arg: later.set())
    assert later.wait(timeout=5)
    assert len(calls) == 1  # once only


def test_link_waits_while_full_and_fires_when_a_slot_frees() -> None:
    pool = WorkerPool(1)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    fired = Event()
    pool._semaphore.rawlink(lambda _arg: fired.set())
    # A firing would come from a hub callback: once the hub has run every callback
    # queued so far, it has had its chance.
    in_hub(lambda: None)
    assert not fired.is_set()
    assert pool._semaphore.locked()
    gate.set()
    assert fired.wait(timeout=5)
    assert not pool._semaphore.locked()


def test_unlinked_callback_never_fires() -> None:
    pool = WorkerPool(1)
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    calls: list[object] = []
    link = calls.append
    pool._semaphore.rawlink(link)
    pool._semaphore.unlink(link)
    pool._semaphore.unlink(link)  # unknown callbacks are ignored, as gevent's are
    # A callback still linked fires on the same pass as this one.
    fired = Event()
    pool._semaphore.rawlink(lambda _arg: fired.set())
    gate.set()
    assert pool.join(timeout=5)
    assert fired.wait(timeout=5)
    assert calls == []


def test_a_failing_link_does_not_starve_the_others() -> None:
    pool = WorkerPool(1)
    errors: list[type] = []
    hub = gevent.get_hub()
    hub.handle_error = lambda context, kind, value, tb: errors.append(kind)
    fired = Event()
    try:

        def broken(_arg: Any) -> None:
            raise RuntimeError("bad link")

        pool._semaphore.rawlink(broken)
        pool._semaphore.rawlink(lambda _arg: fired.set())
        assert fired.wait(timeout=5)
    finally:
        del hub.handle_error
    assert errors == [RuntimeError]


def test_server_binds_full_and_links_and_unlinks_on_close() -> None:
    pool = WorkerPool(3)
    server = StreamServer(("127.0.0.1", 0), lambda sock, addr: None, spawn=pool)
    assert server.full == pool.full
    assert server._spawn == pool.spawn
    assert pool._semaphore.waiting  # linked when built
    server.start()
    in_hub(lambda: None)  # the hub has run the link's callback, queued as it was made
    assert not pool._semaphore.waiting  # fired: the server accepts
    server.close()
    assert not pool._semaphore.waiting
    # Closed before its link fired: unlinked.
    unstarted = StreamServer(("127.0.0.1", 0), lambda sock, addr: None, spawn=pool)
    assert pool._semaphore.waiting
    unstarted.close()
    assert not pool._semaphore.waiting
    pool.close()


def test_free_count_and_size_tell_gunicorn_when_requests_are_in_flight() -> None:
    pool = WorkerPool(5)
    assert pool.free_count() == pool.size
    gate = Event()
    pool.spawn(gate.wait)
    gevent.sleep(0)
    assert pool.free_count() != pool.size
    gate.set()
    assert pool.join(timeout=5)
    assert pool.free_count() == pool.size
