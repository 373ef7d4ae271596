"""Shared fixtures: a time bound on every test, and leak accounting."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Callable

import gevent
import gevent.util
import pytest

from gpool._worker import Worker

# Generous: a test that needs this long is hung, not slow.
TEST_TIMEOUT = 30.0


class TestTimedOut(BaseException):
    """Raised in a test that ran past TEST_TIMEOUT; carries every greenlet's stack."""

    def __init__(self) -> None:
        super().__init__(
            f"test still running after {TEST_TIMEOUT}s; greenlets:\n" + "\n".join(gevent.util.format_run_info())
        )


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    timeout = gevent.Timeout(TEST_TIMEOUT, TestTimedOut)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


def live_workers() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Worker) and not obj.dead)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Let the loop run until *condition* holds, failing after *timeout* seconds.

    For states the pool reaches through its own timers (culling), where there is no
    event to wait on; everything else synchronises on events and joins.
    """
    with gevent.Timeout(timeout, AssertionError(f"{what} not reached within {timeout}s")):
        while not condition():
            gevent.sleep(0.005)
