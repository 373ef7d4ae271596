"""Shared fixtures: a time bound on every test, and leak accounting."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from typing import Callable

import gevent
import gevent.util
import pytest
from gevent import socket
from greenlet import greenlet

from gpool._core.worker import Worker

# Generous: a test that needs this long is hung, not slow.
TEST_TIMEOUT = 30.0


class TestTimedOut(BaseException):
    """Raised in a test that ran past its time bound; carries every greenlet's stack."""

    def __init__(self) -> None:
        super().__init__(
            "test still running past its time bound; greenlets:\n" + "\n".join(gevent.util.format_run_info())
        )


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    timeout = gevent.Timeout(TEST_TIMEOUT, TestTimedOut)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


def live_workers(pool: object = None) -> int:
    """Worker greenlets still alive: all of them, or only *pool*'s (immune to other
    tests' pools winding down meanwhile)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, Worker) and not obj.dead and (pool is None or obj.owner is pool)
    )


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Let the loop run until *condition* holds, failing after *timeout* seconds.

    For states the pool reaches through its own timers (culling), where there is no
    event to wait on; everything else synchronises on events and joins.
    """
    with gevent.Timeout(timeout, AssertionError(f"{what} not reached within {timeout}s")):
        while not condition():
            gevent.sleep(0.005)


def live_greenlets() -> list[greenlet]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, greenlet) and not obj.dead]


@pytest.fixture
def baseline() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor or a greenlet behind.

    Compared as sets: what existed before may go away meanwhile (an earlier test's
    pool culling its workers), but nothing new may stay.
    """
    # WSGIServer looks up the host's name on gevent's resolver thread, which lives
    # for the rest of the process: start it before counting.
    socket.getfqdn("127.0.0.1")
    fds_before = set(os.listdir("/proc/self/fd"))
    greenlets_before: weakref.WeakSet[greenlet] = weakref.WeakSet(live_greenlets())
    yield
    gevent.sleep(0)
    new_fds = set(os.listdir("/proc/self/fd")) - fds_before
    new_greenlets = [g for g in live_greenlets() if g not in greenlets_before]
    assert not new_fds, f"file descriptors leaked: {sorted(new_fds)}"
    assert not new_greenlets, f"greenlets leaked: {new_greenlets}"
