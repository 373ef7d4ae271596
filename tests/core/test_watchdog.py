"""The stuck-task watchdog: soft_deadline logs a stuck task's stack once, hard_deadline
kills the task and retires its worker.

Most tests run on a :class:`~tests.helpers.FakeClock` (``pool._set_clock``, which
the watchdog reads for task ages too) and run the watchdog's timer callback by hand
(``pool._watchdog.tick(pool._workers)``, in the hub as the timer runs it): a deadline
passes exactly when the test advances the clock, and "nothing else happened" is
checked right after a tick that would have done it. The deadlines there are long, so
the real timer (which still ticks, every second) reads a clock that only the test
moves: its ticks decide the same as the test's own.

Two tests stay on the real clock and the real timer, to prove the timer is armed and
acts within a tick of a deadline: ``test_hard_deadline_kills_the_task_and_retires_its_worker``
and ``test_a_hung_wsgi_request_gets_a_500_and_the_server_carries_on``.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any, Callable

import gevent
import pytest
from gevent.event import AsyncResult, Event
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

import gpool
from gpool import DeadlineExceeded, WorkerPool

from ..helpers import FakeClock, connect, exchange, in_hub, running, wait_until

# Fake-clock deadlines: long, so the real timer ticks only once a second.
SOFT = 10.0
HARD = 30.0
# Real-clock deadline of the end-to-end tests: short keeps them fast; the watchdog
# ticks every tenth of it.
REAL_HARD = 0.3


def on_fake_clock(size: int, **kwargs: Any) -> tuple[WorkerPool, FakeClock]:
    pool = WorkerPool(size, **kwargs)
    clock = FakeClock()
    pool._set_clock(clock)
    return pool, clock


def tick(pool: WorkerPool) -> None:
    """Run the watchdog timer's callback now, in the hub, as the timer would."""
    watchdog = pool._watchdog
    assert watchdog is not None
    in_hub(lambda: watchdog.tick(pool._workers))


def stuck_in_a_recognisable_place(entered: Event, release: Event) -> str:
    entered.set()
    release.wait()
    return "released"


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gpool" and r.levelno == level]


def test_soft_deadline_logs_the_stack_once_and_lets_the_task_finish(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gpool")
    pool, clock = on_fake_clock(4, soft_deadline=SOFT)
    entered, release = Event(), Event()
    result = pool.submit(stuck_in_a_recognisable_place, entered, release)
    assert entered.wait(5)
    clock.advance(SOFT - 0.01)
    tick(pool)
    assert pool.stats().tasks_overdue == 0  # not yet
    clock.advance(0.01)
    tick(pool)
    assert pool.stats().tasks_overdue == 1
    # Several deadlines' worth of ticks: the stack must still be logged only once.
    for _ in range(3):
        clock.advance(SOFT)
        tick(pool)
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "past soft_deadline=10s" in message
    assert "stuck_in_a_recognisable_place" in message  # the frame the task waits in
    release.set()
    assert result.get(timeout=5) == "released"
    stats = pool.stats()
    assert (stats.tasks_completed, stats.tasks_killed, stats.tasks_timed_out, stats.tasks_overdue) == (1, 0, 0, 1)
    pool.close()
    assert pool.join(5)


def test_hard_deadline_kills_the_task_and_retires_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gpool")
    pool = WorkerPool(1, hard_deadline=REAL_HARD)  # the real clock and timer
    seen: AsyncResult = AsyncResult()
    cleaned_up = Event()
    workers: list[Any] = []

    def stuck() -> None:
        workers.append(gevent.getcurrent())
        started = monotonic()
        try:
            Event().wait()
        except BaseException as exc:
            seen.set((exc, monotonic() - started))
            raise
        finally:
            cleaned_up.set()

    pool.spawn(stuck)
    exc, waited = seen.get(timeout=5)
    assert isinstance(exc, DeadlineExceeded)
    assert not isinstance(exc, Exception)  # `except Exception` in the task cannot swallow it
    # Acted on within a tick (a tenth of the deadline) of it; generous upper bound.
    assert REAL_HARD <= waited < REAL_HARD + 1.0
    assert cleaned_up.is_set()
    assert pool.join(5)
    wait_until(lambda: workers[0].dead, what="the killed task's worker exited")
    stats = pool.stats()
    assert (stats.tasks_killed, stats.tasks_timed_out, stats.tasks_completed, stats.tasks_failed) == (1, 1, 0, 0)
    assert (stats.retired, stats.workers, stats.busy) == (1, 0, 0)
    assert stats.tasks_started == stats.tasks_completed + stats.tasks_failed + stats.tasks_killed
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert "past hard_deadline=0.3s" in errors[0].getMessage()
    assert "stuck" in errors[0].getMessage()  # no soft deadline: the kill logs the stack

    # The slot is free again and the next task gets a new worker.
    assert pool.submit(lambda: "next").get(timeout=5) == "next"
    assert pool.stats().workers_started == 2
    pool.close()
    assert pool.join(5)


def test_soft_then_hard_logs_the_stack_once() -> None:
    pool, clock = on_fake_clock(2, soft_deadline=SOFT, hard_deadline=HARD)
    stacks: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stacks.append(record.getMessage())

    handler = Capture(logging.WARNING)
    logger = logging.getLogger("gpool")
    logger.addHandler(handler)
    try:
        entered = Event()
        result = pool.submit(stuck_in_a_recognisable_place, entered, Event())
        assert entered.wait(5)
        clock.advance(SOFT)
        tick(pool)
        assert len(stacks) == 1
        clock.advance(HARD - SOFT)
        tick(pool)
        with pytest.raises(DeadlineExceeded):
            result.get(timeout=5)
    finally:
        logger.removeHandler(handler)
    assert len(stacks) == 2
    assert "soft_deadline" in stacks[0] and "waiting in:" in stacks[0]
    assert "hard_deadline" in stacks[1] and "waiting in:" not in stacks[1]
    stats = pool.stats()
    assert (stats.tasks_overdue, stats.tasks_timed_out, stats.tasks_killed) == (1, 1, 1)
    pool.close()
    assert pool.join(5)


def test_only_time_inside_a_task_counts() -> None:
    # One worker runs tasks back to back and idles between them for longer than both
    # deadlines: neither the idle time nor the sum of tasks may trip the watchdog.
    pool, clock = on_fake_clock(1, soft_deadline=SOFT, hard_deadline=HARD, max_idle=3600)
    for _ in range(5):
        entered, release = Event(), Event()
        result = pool.submit(stuck_in_a_recognisable_place, entered, release)
        assert entered.wait(5)
        clock.advance(SOFT / 2)
        tick(pool)  # half a soft deadline into the task
        release.set()
        assert result.get(timeout=5) == "released"
        clock.advance(HARD * 2)
        tick(pool)  # idle past both deadlines
    stats = pool.stats()
    assert (stats.tasks_overdue, stats.tasks_timed_out, stats.workers_started) == (0, 0, 1)
    pool.close()
    assert pool.join(5)


def test_a_task_that_swallows_the_kill_runs_on_and_its_worker_retires_after() -> None:
    pool, clock = on_fake_clock(2, hard_deadline=HARD)
    entered, caught, finish = Event(), Event(), Event()

    def stubborn() -> str:
        entered.set()
        try:
            Event().wait()
        except DeadlineExceeded:
            caught.set()
        finish.wait()
        return "done anyway"

    result = pool.submit(stubborn)
    assert entered.wait(5)
    clock.advance(HARD)
    tick(pool)
    assert caught.is_set()
    # Killed once only, however long it now runs.
    for _ in range(3):
        clock.advance(HARD)
        tick(pool)
    assert pool.stats().tasks_timed_out == 1
    assert len(pool) == 1
    finish.set()
    assert result.get(timeout=5) == "done anyway"
    assert pool.join(5)
    stats = pool.stats()
    # Ended by the deadline's kill, though it caught it: counted as killed, not completed.
    assert (stats.tasks_killed, stats.tasks_completed, stats.retired, stats.workers) == (1, 0, 1, 0)
    pool.close()


def test_detached_tasks_are_exempt() -> None:
    pool, clock = on_fake_clock(2, soft_deadline=SOFT, hard_deadline=HARD)
    detached, release = Event(), Event()

    def stream() -> str:
        gpool.detach()
        detached.set()
        release.wait()
        return "streamed"

    result = pool.submit(stream)
    assert detached.wait(5)
    # A task that did not detach, started at the same time: the tick that passes over
    # the stream kills this one.
    entered = Event()
    attached = pool.submit(stuck_in_a_recognisable_place, entered, Event())
    assert entered.wait(5)
    clock.advance(HARD * 2)
    tick(pool)
    with pytest.raises(DeadlineExceeded):
        attached.get(timeout=5)
    stats = pool.stats()
    assert (stats.detached, stats.tasks_overdue, stats.tasks_timed_out) == (1, 0, 1)
    assert not result.ready()
    release.set()
    assert result.get(timeout=5) == "streamed"
    pool.close()
    assert pool.join(5)


def test_a_hung_handler_loses_its_connection_and_others_are_served(baseline: None) -> None:
    hang, hanging = Event(), Event()

    def handle(sock: Any, _address: Any) -> None:
        request = sock.recv(1024)
        if request.startswith(b"hang"):
            hanging.set()
            hang.wait()
        sock.sendall(b"served " + request)

    pool, clock = on_fake_clock(2, hard_deadline=HARD)
    with running(StreamServer(("127.0.0.1", 0), handle, spawn=pool)) as server:
        stuck = connect(server)
        stuck.sendall(b"hang")
        assert hanging.wait(5)
        # Meanwhile the pool's other slot goes on serving.
        assert exchange(server, b"ping") == b"served ping"
        # The watchdog kills the hung handler; the server closes its connection.
        clock.advance(HARD)
        tick(pool)
        assert stuck.recv(1024) == b""
        stuck.close()
        wait_until(lambda: pool.stats().busy == 0, what="the killed task released its slot")
        assert exchange(server, b"again") == b"served again"
    stats = pool.stats()
    assert (stats.tasks_timed_out, stats.tasks_killed, stats.tasks_completed) == (1, 1, 2)


def test_a_hung_wsgi_request_gets_a_500_and_the_server_carries_on(baseline: None) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/hang":
            Event().wait()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    pool = WorkerPool(2, hard_deadline=REAL_HARD)  # the real clock and timer
    # pywsgi turns any exception from the app into a 500 (and reports it to the hub,
    # which prints it: silenced here to keep the test output readable).
    hub = gevent.get_hub()
    reported: list[type[BaseException]] = []
    hub.handle_error = lambda _context, kind, _value, _tb: reported.append(kind)
    try:
        with running(WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None)) as server:
            started = monotonic()
            reply = exchange(server, b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
            assert monotonic() - started >= REAL_HARD
            assert reply.startswith(b"HTTP/1.1 500 ")
            assert b"Connection: close" in reply
            reply = exchange(server, b"GET / HTTP/1.0\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"fine")
    finally:
        del hub.handle_error
    assert reported == [DeadlineExceeded]
    stats = pool.stats()
    assert (stats.tasks_timed_out, stats.workers_started) == (1, 2)  # the killed task's worker retired


def test_no_deadline_means_no_watchdog_and_no_extra_counts() -> None:
    pool = WorkerPool(2)
    assert pool.submit(gevent.sleep, 0).get(timeout=5) is None
    stats = pool.stats()
    assert (stats.tasks_overdue, stats.tasks_timed_out) == (0, 0)
    assert pool._watchdog is None
    pool.close()
    assert pool.join(5)


def test_the_watchdog_stops_once_a_closed_pool_is_empty() -> None:
    pool = WorkerPool(2, hard_deadline=5)
    release = Event()
    pool.spawn(release.wait)
    gevent.sleep(0)
    watchdog = pool._watchdog
    assert watchdog is not None and watchdog.running
    pool.close()
    assert watchdog.running  # still guarding the task that runs on
    release.set()
    assert pool.join(5)
    wait_until(lambda: not watchdog.running, what="the watchdog stopped")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"soft_deadline": 0}, ValueError, "soft_deadline must be a positive, finite number of seconds, got 0"),
        ({"hard_deadline": -1}, ValueError, "hard_deadline must be a positive, finite number of seconds, got -1"),
        ({"hard_deadline": "5"}, TypeError, r"hard_deadline must be a positive number of seconds, got '5' \(str\)"),
        (
            {"soft_deadline": 2, "hard_deadline": 2},
            ValueError,
            r"soft_deadline must be less than hard_deadline \(2\), got 2",
        ),
    ],
)
def test_bad_deadlines_are_refused(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        WorkerPool(**kwargs)
