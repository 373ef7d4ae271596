"""Where task exceptions go, and which ones are kept quiet."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator

import gevent
import pytest
from greenlet import getcurrent

from gpool import WorkerPool
from gpool._core.errorlog import is_benign


@pytest.fixture
def reported() -> Iterator[list[tuple[object, type, BaseException]]]:
    """Record what reaches hub.handle_error instead of printing it."""
    hub = gevent.get_hub()
    seen: list[tuple[object, type, BaseException]] = []
    hub.handle_error = lambda context, kind, value, tb: seen.append((context, kind, value))
    try:
        yield seen
    finally:
        del hub.handle_error


def test_exception_goes_to_hub_handle_error(reported: list) -> None:
    pool = WorkerPool(2)
    workers: list[object] = []

    def fail() -> None:
        workers.append(getcurrent())
        raise KeyError("lost")

    pool.spawn(fail)
    assert pool.join(timeout=5)
    assert len(reported) == 1
    context, kind, value = reported[0]
    assert kind is KeyError and value.args == ("lost",)
    assert context is workers[0]
    assert pool.stats().tasks_failed == 1


def test_worker_survives_an_ordinary_exception(reported: list) -> None:
    pool = WorkerPool(1)
    workers: list[object] = []

    def note_and_fail() -> None:
        workers.append(getcurrent())
        raise ValueError("x")

    pool.spawn(note_and_fail)
    pool.spawn(note_and_fail)
    assert pool.join(timeout=5)
    assert workers[0] is workers[1]
    assert pool.stats().workers_started == 1
    assert len(reported) == 2


def test_greenlet_exit_is_a_normal_end(reported: list) -> None:
    pool = WorkerPool(1)

    def leave() -> None:
        raise gevent.GreenletExit

    pool.spawn(leave)
    assert pool.join(timeout=5)
    assert reported == []
    assert pool.stats().tasks_completed == 1
    assert pool.stats().workers == 1


@pytest.mark.parametrize(
    "error",
    [
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
        socket.timeout("timed out"),
        OSError(errno.EPIPE, "plain OSError with EPIPE"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_benign_network_errors_are_logged_at_debug_only(
    reported: list, caplog: pytest.LogCaptureFixture, error: OSError
) -> None:
    pool = WorkerPool(1)

    def hang_up() -> None:
        raise error

    with caplog.at_level(logging.DEBUG, logger="gpool"):
        pool.spawn(hang_up)
        assert pool.join(timeout=5)
    assert reported == []
    records = [r for r in caplog.records if r.name == "gpool" and r.exc_info and r.exc_info[1] is error]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert pool.stats().tasks_failed == 1


def test_log_all_errors_reports_benign_errors_too(reported: list) -> None:
    pool = WorkerPool(1, log_all_errors=True)

    def hang_up() -> None:
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    pool.spawn(hang_up)
    assert pool.join(timeout=5)
    assert [kind for _, kind, _ in reported] == [ConnectionResetError]


def test_other_os_errors_are_not_benign() -> None:
    assert not is_benign(OSError(errno.EBADF, "bad fd"))
    assert not is_benign(FileNotFoundError(errno.ENOENT, "missing"))
    assert not is_benign(ValueError("x"))


def test_system_error_is_reported_and_retires_the_worker(reported: list) -> None:
    pool = WorkerPool(1)

    def exit_now() -> None:
        raise SystemExit(3)

    pool.spawn(exit_now)
    assert pool.join(timeout=5)
    gevent.sleep(0)
    assert [kind for _, kind, _ in reported] == [SystemExit]
    stats = pool.stats()
    assert (stats.workers, stats.retired, stats.tasks_failed) == (0, 1, 1)
    # The pool carries on with a new worker.
    assert pool.submit(lambda: 7).get(timeout=5) == 7
