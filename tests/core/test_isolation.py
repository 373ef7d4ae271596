"""No state leaks from one task to the next on a reused worker."""

from __future__ import annotations

import contextvars
import gc
import logging
import subprocess
import sys
import textwrap
import weakref

import gevent
import gevent.event
import pytest
from gevent.local import local
from greenlet import getcurrent

from gpool import WorkerPool

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")


def run_twice_on_one_worker(pool: WorkerPool, first, second) -> object:  # type: ignore[no-untyped-def]
    """Run *first* then *second* on the same greenlet and return *second*'s result."""
    workers: list[object] = []
    pool.submit(lambda: (workers.append(getcurrent()), first())).get(timeout=5)
    result = pool.submit(lambda: (workers.append(getcurrent()), second())[1]).get(timeout=5)
    assert workers[0] is workers[1], "the test needs both tasks on one worker"
    return result


def test_contextvars_start_empty() -> None:
    pool = WorkerPool(1)
    assert run_twice_on_one_worker(pool, lambda: user.set("alice"), user.get) == "anonymous"


def test_contextvars_carry_over_without_isolation() -> None:
    pool = WorkerPool(1, isolate=False)
    assert run_twice_on_one_worker(pool, lambda: user.set("alice"), user.get) == "alice"


def test_gevent_local_values_do_not_carry_over() -> None:
    pool = WorkerPool(1)
    request = local()

    def set_user() -> None:
        request.user = "alice"

    assert run_twice_on_one_worker(pool, set_user, lambda: getattr(request, "user", None)) is None


def test_gevent_local_values_carry_over_without_isolation() -> None:
    pool = WorkerPool(1, isolate=False)
    request = local()

    def set_user() -> None:
        request.user = "alice"

    assert run_twice_on_one_worker(pool, set_user, lambda: getattr(request, "user", None)) == "alice"


class Session(local):
    inits = 0

    def __init__(self) -> None:
        Session.inits += 1
        self.user = "anonymous"
        self.cart: list[str] = []


def test_local_subclass_is_freshly_initialised_for_each_task() -> None:
    pool = WorkerPool(1)
    session = Session()
    Session.inits = 0

    def shop() -> None:
        session.user = "alice"
        session.cart.append("book")

    result = run_twice_on_one_worker(pool, shop, lambda: (session.user, list(session.cart)))
    assert result == ("anonymous", [])
    assert Session.inits == 2


def test_local_values_are_freed_when_the_task_ends() -> None:
    pool = WorkerPool(1)
    holder = local()

    class Payload:
        pass

    refs: list[weakref.ref[Payload]] = []

    def keep() -> None:
        payload = Payload()
        refs.append(weakref.ref(payload))
        holder.payload = payload

    pool.submit(keep).get(timeout=5)
    gc.collect()
    assert refs[0]() is None
    assert pool.stats().idle == 1  # the worker is parked, not dead


def test_locals_created_inside_a_task_are_isolated_too() -> None:
    pool = WorkerPool(1)
    made: list[local] = []

    def make() -> None:
        made.append(local())
        made[0].value = 1

    run_twice_on_one_worker(pool, make, lambda: None)
    assert pool.submit(lambda: getattr(made[0], "value", None)).get(timeout=5) is None


def test_monkey_patched_threading_local_is_isolated() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        import threading
        from greenlet import getcurrent
        from gpool import WorkerPool

        class Defaults(threading.local):
            def __init__(self):
                self.user = "anonymous"

        plain, defaults = threading.local(), Defaults()
        pool = WorkerPool(1)
        workers = []

        def first():
            workers.append(getcurrent())
            plain.token = "secret"
            defaults.user = "alice"

        def second():
            workers.append(getcurrent())
            return getattr(plain, "token", None), defaults.user

        pool.submit(first).get(timeout=5)
        seen = pool.submit(second).get(timeout=5)
        assert workers[0] is workers[1], workers
        print(seen)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(None, 'anonymous')"


def test_a_leaked_timeout_firing_while_idle_does_not_break_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    # A Timeout targets the greenlet that started it, not the task: if a task leaves
    # one running, it fires in whatever that worker does next (a documented
    # limitation). When that is waiting for work, the worker must survive it.
    pool = WorkerPool(1)
    workers: list[object] = []
    fired = gevent.event.Event()

    def leaks_a_timeout() -> None:
        workers.append(getcurrent())
        gevent.Timeout(0.01).start()  # never cancelled
        # A later timer tells the test when the leaked one has certainly fired.
        gevent.get_hub().loop.timer(0.05).start(fired.set)

    with caplog.at_level(logging.DEBUG, logger="gpool"):
        pool.submit(leaks_a_timeout).get(timeout=5)
        assert fired.wait(timeout=5)
    assert any("stray" in r.getMessage() for r in caplog.records)
    assert pool.submit(lambda: getcurrent()).get(timeout=5) is workers[0]
    assert pool.stats().workers == 1
