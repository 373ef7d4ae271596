"""Small tools the tests share: the one home of every importable helper.

``tests/conftest.py`` holds only fixtures and pytest hooks (which import from here);
test modules import helpers from this module, never from a conftest.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import gevent
import gevent.util
import pytest
from gevent import socket
from gevent.event import AsyncResult
from greenlet import greenlet

from gpool._core.worker import Worker


class TestTimedOut(BaseException):
    """Raised in a test that ran past its time bound; carries every greenlet's stack."""

    __test__ = False  # a helper, not a test class

    def __init__(self) -> None:
        super().__init__(
            "test still running past its time bound; greenlets:\n" + "\n".join(gevent.util.format_run_info())
        )


def wait_until(
    condition: Callable[[], bool],
    timeout: float = 5.0,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> None:
    """Let the loop run until *condition* holds, failing after *timeout* seconds.

    For states reached through timers or other processes, where there is no event to
    wait on; everything else synchronises on events and joins. *details*, if given,
    is called on failure and its text added to the message (a log, say).
    """
    with gevent.Timeout(timeout, False):
        while not condition():
            gevent.sleep(0.005)
        return
    message = f"{what} not reached within {timeout}s"
    if details is not None:
        message += "\n" + details()
    raise AssertionError(message)


def live_workers(pool: object = None) -> int:
    """Worker greenlets still alive: all of them, or only *pool*'s (immune to other
    tests' pools winding down meanwhile)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, Worker) and not obj.dead and (pool is None or obj.owner is pool)
    )


def live_greenlets() -> list[greenlet]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, greenlet) and not obj.dead]


class FakeClock:
    """A clock for ``WorkerPool._set_clock``: stands still until :meth:`advance`.

    Starts well above zero, like ``time.monotonic`` on a machine that has been up a
    while: subtracting max_idle or a deadline from it never goes negative.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds


# -- the reliability suite's load scale ------------------------------------------------

_SCALE_VARIABLE = "GPOOL_RELIABILITY_SCALE"


def _read_scale() -> float:
    text = os.environ.get(_SCALE_VARIABLE, "1")
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise pytest.UsageError(f"{_SCALE_VARIABLE} must be a positive number (1 = the CI load), got {text!r}")
    return scale


# The reliability suite's volume: 1 (the default) is the load the README's figures
# come from and CI runs; see tests/reliability/conftest.py.
SCALE = _read_scale()


def scaled(count: int, minimum: int = 1) -> int:
    """*count* (the CI load) times GPOOL_RELIABILITY_SCALE, never below *minimum*."""
    return max(minimum, round(count * SCALE))


# -- sockets and servers -----------------------------------------------------------------


def in_hub(fn: Callable[[], Any]) -> Any:
    """Run *fn* in the hub, as a server's accept callback runs, and return its result."""
    result: AsyncResult = AsyncResult()

    def callback() -> None:
        try:
            result.set(fn())
        except BaseException as exc:
            result.set_exception(exc)

    gevent.get_hub().loop.run_callback(callback)
    return result.get(timeout=5)


def connect(server: Any, timeout: float = 10.0) -> Any:
    # A numeric address and a plain connect(): create_connection() would resolve the
    # name on gevent's thread pool, whose threads would show up as "leaked" greenlets.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.server_port))
    return sock


def read_all(sock: Any) -> bytes:
    """Everything *sock* receives until the peer ends the stream."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def exchange(server: Any, payload: bytes, timeout: float = 10.0) -> bytes:
    with connect(server, timeout) as sock:
        sock.sendall(payload)
        return read_all(sock)


@contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start *server*; on exit stop it and close its pool, so no worker outlives the test."""
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)
        pool = server.pool
        if pool is not None and hasattr(pool, "close"):
            pool.close()
            pool.join(5)
