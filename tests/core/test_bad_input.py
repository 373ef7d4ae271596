"""Bad input to every public call, and every method on a closed pool.

A refused call raises ``TypeError`` (wrong type) or ``ValueError`` (wrong value) with a
message naming the parameter, what is allowed and the value, and leaves no trace: the
pool's counters, repr and gauges are as they were, nothing waits for a slot, no kill
is queued, no greenlet or file descriptor is left behind, and the pool still runs
tasks. Constructor options are in ``test_validation.py``.

Timeouts follow gevent's rules: ``None`` (or ``+inf``) waits as long as it takes, zero
or a negative number does not wait; NaN, strings and bools are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import gevent
import pytest
from gevent.event import Event
from gevent.exceptions import BlockingSwitchOutError
from gevent.server import StreamServer

import gpool
from gpool import PoolClosed, WorkerPool

from ..helpers import exchange, in_hub, running

TIMEOUT = "timeout must be None or a number of seconds"
EXCEPTION = "exception must be an exception instance or a BaseException subclass that takes no arguments"


class NotAnException:
    pass


class NeedsArgs(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)


@pytest.fixture
def hub_errors() -> Iterator[list[object]]:
    """What the hub is asked to report meanwhile: a kill queued with a bad exception
    fails there, in a callback, and would change nothing else a test can see."""
    hub = gevent.get_hub()
    errors: list[object] = []
    hub.handle_error = lambda context, kind, value, tb: errors.append(value)
    try:
        yield errors
    finally:
        del hub.handle_error


def snapshot(pool: WorkerPool) -> tuple[object, ...]:
    """All a caller can see of *pool*, and whether anything waits for a slot."""
    return (
        pool.stats(),
        repr(pool),
        len(pool),
        pool.full(),
        pool.free_count(),
        pool.closed,
        pool._semaphore.waiting,
    )


@contextmanager
def pool_in(state: str) -> Iterator[tuple[WorkerPool, Event]]:
    """A one-slot pool: "idle" (one parked worker), "busy" (its task holds the slot,
    waiting on the returned event) or "closed" (no worker left)."""
    pool = WorkerPool(1)
    gate = Event()
    if state == "busy":
        pool.spawn(gate.wait)
        gevent.sleep(0)  # the task is running, suspended in gate.wait()
        assert len(pool) == 1 and pool.full()
    else:
        pool.submit(int).get(timeout=5)
        assert pool.stats().idle == 1
    if state == "closed":
        pool.close()
        assert pool.join(5) and pool.stats().workers == 0
    try:
        yield pool, gate
    finally:
        gate.set()
        pool.close()
        pool.join(5)


def assert_untouched(pool: WorkerPool, before: tuple[object, ...], gate: Event, hub_errors: list[object]) -> None:
    """Nothing changed, nothing changes once the loop runs, and the pool still works."""
    # One trip through the hub: a kill queued by the refused call would land now.
    gevent.sleep(0)
    assert snapshot(pool) == before
    assert hub_errors == []
    gate.set()
    assert pool.join(5) is True
    if pool.closed:
        with pytest.raises(PoolClosed):
            pool.spawn(print)
    else:
        assert pool.submit(lambda: "ran").get(timeout=5) == "ran"
    stats = pool.stats()
    assert (stats.tasks_killed, stats.tasks_failed) == (0, 0)


def release_when_idle(gate: Event) -> gevent.Greenlet:
    """Set *gate* once the loop has nothing else to do: after a timer of zero seconds
    (or less) has fired, so a call given no time to wait has returned by then, and a
    call that returns True afterwards did wait."""
    return gevent.spawn(lambda: (gevent.idle(), gate.set()))


Call = Callable[[WorkerPool], object]

BAD_CALLS = [
    pytest.param(lambda p: p.join(timeout="1"), TypeError, rf"{TIMEOUT}, got '1' \(str\)", id="join(timeout='1')"),
    pytest.param(lambda p: p.join(timeout=[]), TypeError, rf"{TIMEOUT}, got \[\] \(list\)", id="join(timeout=[])"),
    pytest.param(lambda p: p.join(True), TypeError, rf"{TIMEOUT}, got True \(bool\)", id="join(True)"),
    pytest.param(lambda p: p.join(math.nan), ValueError, rf"{TIMEOUT}, not NaN, got nan", id="join(nan)"),
    pytest.param(
        lambda p: p.join(raise_error="yes"),
        TypeError,
        r"raise_error must be True or False, got 'yes' \(str\)",
        id="join(raise_error='yes')",
    ),
    pytest.param(
        lambda p: p.join(0, None),
        TypeError,
        r"raise_error must be True or False, got None \(NoneType\)",
        id="join(raise_error=None)",
    ),
    pytest.param(lambda p: p.wait_available("1"), TypeError, rf"{TIMEOUT}, got '1' \(str\)", id="wait_available('1')"),
    pytest.param(
        lambda p: p.wait_available(timeout=False),
        TypeError,
        rf"{TIMEOUT}, got False \(bool\)",
        id="wait_available(False)",
    ),
    pytest.param(
        lambda p: p.wait_available(-math.nan), ValueError, rf"{TIMEOUT}, not NaN, got nan", id="wait_available(nan)"
    ),
    pytest.param(lambda p: p.kill(timeout="1"), TypeError, rf"{TIMEOUT}, got '1' \(str\)", id="kill(timeout='1')"),
    pytest.param(lambda p: p.kill(timeout=math.nan), ValueError, rf"{TIMEOUT}, not NaN, got nan", id="kill(nan)"),
    pytest.param(
        lambda p: p.kill(block="no"), TypeError, r"block must be True or False, got 'no' \(str\)", id="kill(block='no')"
    ),
    pytest.param(
        lambda p: p.kill(block=None),
        TypeError,
        r"block must be True or False, got None \(NoneType\)",
        id="kill(block=None)",
    ),
    pytest.param(
        lambda p: p.kill(block=0), TypeError, r"block must be True or False, got 0 \(int\)", id="kill(block=0)"
    ),
    pytest.param(lambda p: p.kill(5), TypeError, rf"{EXCEPTION}, got 5 \(int\)", id="kill(5)"),
    pytest.param(lambda p: p.kill("boom"), TypeError, rf"{EXCEPTION}, got 'boom' \(str\)", id="kill('boom')"),
    # Meant block=False: the first positional argument is the exception.
    pytest.param(lambda p: p.kill(False), TypeError, rf"{EXCEPTION}, got False \(bool\)", id="kill(False)"),
    pytest.param(lambda p: p.kill(None), TypeError, rf"{EXCEPTION}, got None \(NoneType\)", id="kill(None)"),
    pytest.param(lambda p: p.kill(int), TypeError, rf"{EXCEPTION}, got <class 'int'> \(type\)", id="kill(int)"),
    pytest.param(
        lambda p: p.kill(NotAnException),
        TypeError,
        rf"{EXCEPTION}, got <class '{re.escape(__name__)}\.NotAnException'> \(type\)",
        id="kill(NotAnException)",
    ),
    pytest.param(
        lambda p: p.kill(NeedsArgs),
        TypeError,
        rf"{EXCEPTION}, got <class '{re.escape(__name__)}\.NeedsArgs'> \(type\)",
        id="kill(NeedsArgs)",
    ),
    pytest.param(lambda p: p.spawn(None), TypeError, r"func must be callable, got None \(NoneType\)", id="spawn(None)"),
    pytest.param(lambda p: p.try_spawn(42), TypeError, r"func must be callable, got 42 \(int\)", id="try_spawn(42)"),
    pytest.param(
        lambda p: p.submit("print"), TypeError, r"func must be callable, got 'print' \(str\)", id="submit('print')"
    ),
]


@pytest.mark.parametrize("state", ["idle", "busy", "closed"])
@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS)
def test_a_bad_argument_is_refused_and_changes_nothing(
    state: str, call: Call, error: type[Exception], message: str, hub_errors: list[object], baseline: None
) -> None:
    # Arguments are checked first, whatever the pool's state: even where the call
    # would have nothing to do (join on an idle pool), and before PoolClosed.
    with pool_in(state) as (pool, gate):
        before = snapshot(pool)
        # Should the call wait instead of refusing, this ends the wait (a task ending)
        # so that the test fails rather than hangs: a NaN timeout even starves the
        # test's own time bound. A refused call never lets it run.
        unstick = release_when_idle(gate)
        with pytest.raises(error, match=f"^{message}$"):
            call(pool)
        unstick.kill()
        assert_untouched(pool, before, gate, hub_errors)


def test_an_exception_class_that_needs_arguments_is_refused_with_the_reason() -> None:
    with pytest.raises(TypeError) as refused:
        WorkerPool(1).kill(NeedsArgs)
    assert isinstance(refused.value.__cause__, TypeError)
    assert "reason" in str(refused.value.__cause__)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: p.join(), id="join()"),
        pytest.param(lambda p: p.wait_available(), id="wait_available()"),
        pytest.param(lambda p: p.kill(), id="kill()"),
    ],
)
def test_waiting_in_the_hub_is_refused_and_changes_nothing(
    call: Call, hub_errors: list[object], baseline: None
) -> None:
    # gevent's own refusal for join and wait_available; kill refuses before it queues
    # the kill, which would otherwise land although the call failed.
    with pool_in("busy") as (pool, gate):
        before = snapshot(pool)
        with pytest.raises(BlockingSwitchOutError):
            in_hub(lambda: call(pool))
        assert_untouched(pool, before, gate, hub_errors)


def test_kill_in_the_hub_says_why_and_works_without_block(baseline: None) -> None:
    with pool_in("busy") as (pool, _gate):
        with pytest.raises(
            BlockingSwitchOutError,
            match=r"^kill\(block=True\) cannot wait in the hub: call it from a greenlet, or pass block=False$",
        ):
            in_hub(pool.kill)
        in_hub(lambda: pool.kill(block=False))
        assert pool.join(5)
        assert pool.stats().tasks_killed == 1


# -- timeouts: gevent's rules -----------------------------------------------------------


WAITS = [
    pytest.param(lambda p, t: p.join(t), False, True, id="join"),
    pytest.param(lambda p, t: p.wait_available(t), 0, 1, id="wait_available"),
]


@pytest.mark.parametrize("timeout", [0, -1, -0.5, -math.inf])
@pytest.mark.parametrize(("call", "unfinished", "_finished"), WAITS)
def test_a_zero_or_negative_timeout_does_not_wait(
    call: Callable[[WorkerPool, float], object], unfinished: object, _finished: object, timeout: float, baseline: None
) -> None:
    # Not "for ever", as threading.Lock.acquire(timeout=-1) would take it.
    with pool_in("busy") as (pool, gate):
        releaser = release_when_idle(gate)
        assert call(pool, timeout) == unfinished
        releaser.join()


@pytest.mark.parametrize("timeout", [None, math.inf, pytest.param(10**400, id="10**400"), 1e300])
@pytest.mark.parametrize(("call", "_unfinished", "finished"), WAITS)
def test_none_or_an_infinite_timeout_waits_as_long_as_it_takes(
    call: Callable[[WorkerPool, float | None], object],
    _unfinished: object,
    finished: object,
    timeout: float | None,
    baseline: None,
) -> None:
    with pool_in("busy") as (pool, gate):
        release_when_idle(gate)
        assert call(pool, timeout) == finished


@pytest.mark.parametrize(("timeout", "waited"), [(-1, False), (0, False), (None, True), (math.inf, True)])
def test_kill_waits_by_the_same_rules(timeout: float | None, waited: bool, baseline: None) -> None:
    pool = WorkerPool(1)
    cleanup = Event()

    def slow_to_die() -> None:
        try:
            Event().wait()
        finally:
            cleanup.wait()

    pool.spawn(slow_to_die)
    gevent.sleep(0)
    if waited:
        release_when_idle(cleanup)
    pool.kill(timeout=timeout)
    # Without time to wait, kill() returns while the task is still in its finally.
    assert len(pool) == (0 if waited else 1)
    cleanup.set()
    assert pool.join(5)
    assert pool.stats().tasks_killed == 1
    pool.close()
    pool.join(5)


# -- a closed pool ------------------------------------------------------------------------


def test_every_method_on_a_closed_pool(baseline: None) -> None:
    pool = WorkerPool(2)
    gate = Event()
    pool.spawn(gate.wait)  # still running when the pool closes
    pool.submit(int).get(timeout=5)  # leaves an idle worker, which close() retires
    pool.close()
    gevent.sleep(0)
    before = snapshot(pool)
    assert before[1:6] == ("<WorkerPool closed size=2 busy=1 idle=0 workers=1 overflow='backlog'>", 1, True, 0, True)

    for name in ("spawn", "try_spawn", "submit"):
        with pytest.raises(PoolClosed, match=rf"^{name}\(\) called on a closed WorkerPool$"):
            getattr(pool, name)(print)
    with pytest.raises(PoolClosed, match=r"^wait_available\(\) called on a closed WorkerPool$"):
        pool.wait_available()
    with pytest.raises(RuntimeError, match=r"^detach\(\) must be called from inside a task running on this"):
        pool.detach()
    assert pool.close() is None  # again: harmless
    assert bool(pool) is True  # server.stop() still joins and kills it
    assert snapshot(pool) == before

    # join waits for the task still running; kill reaches it.
    assert pool.join(timeout=0) is False
    pool.kill(timeout=5)
    assert pool.join() is True
    with pool:  # closes (again) and joins
        pass
    stats = pool.stats()
    assert (stats.busy, stats.idle, stats.workers, stats.tasks_killed) == (0, 0, 0, 1)
    assert stats.tasks_started == stats.tasks_completed + stats.tasks_killed == 2
    assert pool.join() is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda p: p.wait_available(), r"the WorkerPool was closed while wait_available\(\) waited", id="wait"
        ),
        pytest.param(lambda p: p.spawn(print), r"spawn\(\) called on a closed WorkerPool", id="spawn"),
    ],
)
def test_a_call_waiting_for_a_slot_sees_the_pool_close(call: Call, message: str, baseline: None) -> None:
    with pool_in("busy") as (pool, _gate):
        waiting = gevent.spawn(call, pool)
        gevent.sleep(0)
        assert pool._semaphore.waiting
        pool.close()
        with pytest.raises(PoolClosed, match=f"^{message}$"):
            waiting.get(timeout=5)
        assert not pool._semaphore.waiting
        assert pool.stats().tasks_started == 1


def test_a_task_of_a_closed_pool_may_still_detach(baseline: None) -> None:
    pool = WorkerPool(1)
    closed, detached, release = Event(), Event(), Event()

    def stream() -> None:
        closed.wait()
        pool.detach()
        detached.set()
        release.wait()

    pool.spawn(stream)
    gevent.sleep(0)
    pool.close()
    closed.set()
    assert detached.wait(5)
    stats = pool.stats()
    assert (stats.busy, stats.detached) == (0, 1)
    assert pool.join(5) is True  # join does not wait for detached tasks
    release.set()
    gevent.sleep(0)
    assert pool.stats().detached == 0


# -- outside any task -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["main greenlet", "plain greenlet", "hub"])
def test_detach_and_current_pool_outside_a_task(where: str) -> None:
    def probe() -> tuple[str, object]:
        try:
            gpool.detach()
        except RuntimeError as exc:
            return str(exc), gpool.current_pool()
        raise AssertionError("gpool.detach() did not refuse")

    if where == "main greenlet":
        outcome = probe()
    elif where == "plain greenlet":
        outcome = gevent.spawn(probe).get(timeout=5)
    else:
        outcome = in_hub(probe)
    assert outcome == ("gpool.detach() must be called from inside a task running on a WorkerPool", None)


def test_detach_from_another_pools_task_changes_neither_pool(baseline: None) -> None:
    with WorkerPool(1) as pool, WorkerPool(1) as other:
        before = snapshot(pool)
        with pytest.raises(RuntimeError, match=r"^detach\(\) must be called from inside a task running on this"):
            other.submit(pool.detach).get(timeout=5)
        assert snapshot(pool) == before
        stats = other.stats()
        assert (stats.detached, stats.tasks_detached, stats.tasks_failed) == (0, 0, 1)


# -- gpool.drain ----------------------------------------------------------------------------


def echo(sock: Any, _address: Any) -> None:
    sock.sendall(sock.recv(64))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            lambda s: gpool.drain(None),
            TypeError,
            r"servers must be a gevent server or an iterable of servers, got None \(NoneType\)",
            id="drain(None)",
        ),
        pytest.param(
            lambda s: gpool.drain(5),
            TypeError,
            r"servers must be a gevent server or an iterable of servers, got 5 \(int\)",
            id="drain(5)",
        ),
        pytest.param(
            lambda s: gpool.drain("server"),
            TypeError,
            r"servers must be a gevent server or an iterable of servers, got 'server' \(str\)",
            id="drain('server')",
        ),
        pytest.param(
            lambda s: gpool.drain([s, "other"]),
            TypeError,
            r"servers\[1\] must be a gevent server, got 'other' \(str\)",
            id="drain([server, 'other'])",
        ),
        pytest.param(
            lambda s: gpool.drain(s, timeout="30"),
            TypeError,
            rf"{TIMEOUT}, got '30' \(str\)",
            id="drain(timeout='30')",
        ),
        pytest.param(
            lambda s: gpool.drain(s, True), TypeError, rf"{TIMEOUT}, got True \(bool\)", id="drain(timeout=True)"
        ),
        pytest.param(
            lambda s: gpool.drain(s, math.nan), ValueError, rf"{TIMEOUT}, not NaN, got nan", id="drain(timeout=nan)"
        ),
    ],
)
def test_drain_refuses_bad_arguments_before_closing_anything(
    call: Callable[[StreamServer], object], error: type[Exception], message: str, baseline: None
) -> None:
    pool = WorkerPool(2)
    with running(StreamServer(("127.0.0.1", 0), echo, spawn=pool)) as server:
        before = snapshot(pool)
        with pytest.raises(error, match=f"^{message}$"):
            call(server)
        assert server.started and not server.closed
        assert snapshot(pool) == before
        assert exchange(server, b"still serving") == b"still serving"


@pytest.mark.parametrize(("timeout", "graceful"), [(None, True), (math.inf, True), (-1, False), (0, False)])
def test_drain_timeout_follows_the_same_rules(timeout: float | None, graceful: bool, baseline: None) -> None:
    pool = WorkerPool(2)
    gate = Event()
    with running(StreamServer(("127.0.0.1", 0), echo, spawn=pool)) as server:
        pool.spawn(gate.wait)  # a request in flight
        gevent.sleep(0)
        if graceful:
            release_when_idle(gate)
        assert gpool.drain(server, timeout) is graceful
        assert pool.stats().tasks_killed == (0 if graceful else 1)


# -- gpool.metrics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        pytest.param(
            {"pool": None},
            TypeError,
            r"pool must have a stats\(\) method \(a gpool\.WorkerPool\), got None \(NoneType\)",
            id="pool=None",
        ),
        pytest.param({"name": ""}, ValueError, "name must be a non-empty string, got ''", id="name=''"),
        pytest.param({"name": 5}, TypeError, r"name must be a non-empty string, got 5 \(int\)", id="name=5"),
        pytest.param(
            {"name": None}, TypeError, r"name must be a non-empty string, got None \(NoneType\)", id="name=None"
        ),
        pytest.param(
            {"namespace": "1st"},
            ValueError,
            r"namespace must match \[a-zA-Z_:\]\[a-zA-Z0-9_:\]\*, got '1st'",
            id="namespace='1st'",
        ),
        pytest.param(
            {"namespace": b"gpool"},
            TypeError,
            r"namespace must match \[a-zA-Z_:\]\[a-zA-Z0-9_:\]\*, got b'gpool' \(bytes\)",
            id="namespace=b'gpool'",
        ),
        pytest.param(
            {"registry": "default"},
            TypeError,
            r"registry must be None or a prometheus_client CollectorRegistry, got 'default' \(str\)",
            id="registry='default'",
        ),
    ],
)
def test_metrics_register_refuses_bad_arguments_and_registers_nothing(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import REGISTRY, CollectorRegistry

    from gpool.metrics import register

    registry = CollectorRegistry()
    with WorkerPool(2) as pool:
        before = snapshot(pool)
        call = {"pool": pool, "registry": registry, **arguments}
        with pytest.raises(error, match=f"^{message}$"):
            register(**call)
        assert list(registry.collect()) == []
        assert REGISTRY.get_sample_value("gpool_size", {"pool": "default"}) is None
        assert snapshot(pool) == before


@pytest.mark.parametrize(
    ("pool", "name", "error", "message"),
    [
        pytest.param(
            object(),
            "b",
            TypeError,
            r"pool must have a stats\(\) method .*, got <object object at .*> \(object\)",
            id="pool=object()",
        ),
        pytest.param(WorkerPool(1), 7, TypeError, r"name must be a non-empty string, got 7 \(int\)", id="name=7"),
        pytest.param(WorkerPool(1), "", ValueError, r"name must be a non-empty string, got ''", id="name=''"),
        pytest.param(
            WorkerPool(1),
            "a",
            ValueError,
            r"a pool named 'a' is already exported by this collector",
            id="name taken",
        ),
    ],
)
def test_collector_add_refuses_bad_arguments_and_keeps_its_pools(
    pool: object, name: object, error: type[Exception], message: str
) -> None:
    pytest.importorskip("prometheus_client")
    from gpool.metrics import PoolCollector

    collector = PoolCollector(WorkerPool(1), "a")
    before = repr(collector)
    with pytest.raises(error, match=f"^{message}$"):
        collector.add(pool, name)  # type: ignore[arg-type]
    assert repr(collector) == before == "<PoolCollector namespace='gpool' pools=['a']>"
