"""Shared fixtures: a time bound on every test, and leak accounting.

Fixtures and hooks only: the helpers tests import live in :mod:`tests.helpers`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket
from greenlet import greenlet

from .helpers import TestTimedOut, live_greenlets

# Generous: a test that needs this long is hung, not slow.
TEST_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    timeout = gevent.Timeout(TEST_TIMEOUT, TestTimedOut)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


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
