"""apply, map, imap and imap_unordered: gevent.pool.Pool's helpers, on the pool's workers.

The semantics are gevent's (order, a task's exception re-raised to the caller,
imap_unordered's maxsize back-pressure); every item is a task of the pool, so its
size, its isolation and its counters apply.
"""

from __future__ import annotations

import contextvars
from typing import Any, Iterator

import gevent
import pytest
from gevent.event import Event

from gpool import PoolClosed, PoolFull, WorkerPool, current_pool

from ..helpers import FakeClock, wait_until

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Boom(Exception):
    pass


def double(x: int) -> int:
    return 2 * x


class Gate:
    """Tasks that wait for their own release, to decide the order they end in."""

    def __init__(self) -> None:
        self.events: dict[Any, Event] = {}
        self.running = 0
        self.most_running = 0

    def event(self, key: Any) -> Event:
        return self.events.setdefault(key, Event())

    def task(self, key: Any) -> Any:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            self.event(key).wait()
            return key
        finally:
            self.running -= 1


# -- apply ----------------------------------------------------------------------------


def test_apply_returns_the_result_and_runs_on_a_worker_of_the_pool() -> None:
    pool = WorkerPool(2)

    def where(a: int, b: int, *, c: int) -> tuple[Any, int]:
        return current_pool(), a + b + c

    assert pool.apply(where, (1, 2), {"c": 3}) == (pool, 6)
    assert pool.apply(double, [4]) == 8
    assert pool.apply(lambda: "no arguments") == "no arguments"
    assert pool.stats().tasks_completed == 3
    pool.close()


def test_apply_reraises_the_exception_and_counts_it_as_a_failure_not_reported() -> None:
    pool = WorkerPool(2)
    reported: list[Any] = []
    hub = gevent.get_hub()
    original = hub.handle_error
    hub.handle_error = lambda *args: reported.append(args)
    try:

        def fail() -> None:
            raise Boom("from the task")

        with pytest.raises(Boom, match="from the task"):
            pool.apply(fail)
    finally:
        hub.handle_error = original
    assert pool.stats().tasks_failed == 1 and reported == []
    pool.close()


def test_apply_isolates_the_task_from_the_caller_context() -> None:
    pool = WorkerPool(2)
    request_id.set("caller")
    try:
        assert pool.apply(request_id.get) == "unset"
    finally:
        request_id.set("unset")
    pool.close()


@pytest.mark.parametrize("overflow", ["backlog", "reject"])
def test_apply_waits_for_a_slot_under_either_overflow_policy(overflow: str) -> None:
    pool = WorkerPool(1, overflow=overflow)
    release = Event()
    pool.spawn(release.wait)
    gevent.sleep(0)
    assert len(pool) == 1
    caller = gevent.spawn(pool.apply, double, (21,))
    wait_until(lambda: pool._signal.waiting, what="apply() waits for a slot")
    assert not caller.dead
    release.set()
    assert caller.get(timeout=5) == 42
    pool.close()


def test_apply_from_a_task_of_a_full_pool_raises_pool_full_as_spawn_does() -> None:
    pool = WorkerPool(1)
    caught: list[BaseException] = []

    def nested() -> None:
        try:
            pool.apply(double, (1,))
        except PoolFull as exc:
            caught.append(exc)

    pool.spawn(nested)
    assert pool.join(5)
    assert len(caught) == 1 and "own tasks" in str(caught[0]) and "deadlock" in str(caught[0])
    pool.close()


def test_apply_from_a_task_with_a_free_slot_runs_on_another_worker() -> None:
    pool = WorkerPool(2)
    seen: list[Any] = []

    def nested() -> None:
        seen.append(pool.apply(gevent.getcurrent) is not gevent.getcurrent())

    pool.spawn(nested)
    assert pool.join(5)
    assert seen == [True]
    pool.close()


# -- map --------------------------------------------------------------------------------


def test_map_keeps_the_input_order_whatever_order_the_tasks_end_in() -> None:
    pool = WorkerPool(5)
    gate = Gate()
    caller = gevent.spawn(pool.map, gate.task, range(5))
    wait_until(lambda: gate.running == 5, what="five tasks run")
    for key in reversed(range(5)):
        gate.event(key).set()
        gevent.sleep(0)
    assert caller.get(timeout=5) == [0, 1, 2, 3, 4]
    pool.close()


def test_map_runs_at_most_size_tasks_at_once() -> None:
    pool = WorkerPool(3)
    gate = Gate()
    caller = gevent.spawn(pool.map, gate.task, range(10))
    wait_until(lambda: gate.running == 3, what="three tasks run")
    for key in range(10):
        gate.event(key).set()
    assert caller.get(timeout=5) == list(range(10))
    assert gate.most_running == 3
    pool.close()


def test_map_raises_the_first_failure_in_input_order() -> None:
    pool = WorkerPool(4)

    def fail_odd(x: int) -> int:
        if x % 2:
            raise Boom(f"item {x}")
        return x

    with pytest.raises(Boom, match="item 1"):
        pool.map(fail_odd, range(6))
    assert pool.join(5)
    assert pool.stats().tasks_failed == 3 and pool.stats().tasks_completed == 3
    pool.close()


def test_map_of_nothing_is_an_empty_list() -> None:
    pool = WorkerPool(1)
    assert pool.map(double, []) == []
    assert pool.stats().tasks_started == 0
    pool.close()


def test_map_from_a_task_of_a_full_pool_raises_pool_full() -> None:
    pool = WorkerPool(1)
    caught: list[BaseException] = []

    def nested() -> None:
        try:
            pool.map(double, range(3))
        except PoolFull as exc:
            caught.append(exc)

    pool.spawn(nested)
    assert pool.join(5)
    assert len(caught) == 1 and "map()" in str(caught[0])
    pool.close()


def test_map_from_a_task_with_room_waits_for_slots_and_completes() -> None:
    pool = WorkerPool(2)
    results: list[Any] = []
    pool.spawn(lambda: results.append(pool.map(double, range(6))))
    assert pool.join(5)
    assert results == [[0, 2, 4, 6, 8, 10]]
    pool.close()


def test_map_leaves_no_greenlet_or_descriptor_behind(baseline: None) -> None:
    pool = WorkerPool(3, max_idle=60)
    assert pool.map(double, range(20)) == [2 * x for x in range(20)]
    pool.close()
    assert pool.join(5)


# -- imap and imap_unordered ------------------------------------------------------------------


def test_imap_takes_several_iterables_together_like_the_builtin_map() -> None:
    pool = WorkerPool(4)
    assert list(pool.imap(pow, [2, 3, 4], [3, 2, 1])) == [8, 9, 4]
    assert list(pool.imap(pow, [2, 3, 4], [1])) == [2]  # the shortest decides
    pool.close()


def test_imap_raises_a_task_failure_at_its_position_and_goes_on_after_it() -> None:
    pool = WorkerPool(3)

    def fail_two(x: int) -> int:
        if x == 2:
            raise Boom("two")
        return x

    results = pool.imap(fail_two, range(5))
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(Boom, match="two"):
        next(results)
    assert list(results) == [3, 4]
    pool.close()


def test_imap_unordered_yields_in_the_order_tasks_end() -> None:
    pool = WorkerPool(4)
    gate = Gate()
    results = pool.imap_unordered(gate.task, ["a", "b", "c", "d"])
    wait_until(lambda: gate.running == 4, what="four tasks run")
    got = []
    for key in ["c", "a", "d", "b"]:
        gate.event(key).set()
        got.append(next(results))
    assert got == ["c", "a", "d", "b"]
    with pytest.raises(StopIteration):
        next(results)
    pool.close()


def test_imap_unordered_maxsize_holds_the_feeder_back_until_results_are_taken() -> None:
    pool = WorkerPool(10)
    started: list[int] = []

    def record(x: int) -> int:
        started.append(x)
        return x

    results = pool.imap_unordered(record, range(10), maxsize=2)
    wait_until(lambda: len(started) == 2, what="two items submitted")
    # Both results are waiting for the caller; the feeder waits on the semaphore.
    wait_until(lambda: pool.stats().tasks_completed == 2, what="both tasks end")
    assert len(started) == 2 and pool.stats().tasks_started == 2
    first = next(results)
    assert first in (0, 1)
    wait_until(lambda: len(started) == 3, what="one more item submitted once a result is taken")
    wait_until(lambda: pool.stats().tasks_completed == 3, what="it ends")
    assert pool.stats().tasks_started == 3  # and no more: two results wait again
    assert sorted([first, *results]) == list(range(10))
    pool.close()


def test_imap_maxsize_holds_back_in_order_too() -> None:
    pool = WorkerPool(10)
    gate = Gate()
    results = pool.imap(gate.task, range(6), maxsize=3)
    wait_until(lambda: gate.running == 3, what="three items submitted")
    for key in range(6):
        gate.event(key).set()
    assert list(results) == list(range(6))
    assert gate.most_running == 3
    pool.close()


def test_without_maxsize_the_feeder_submits_everything_the_pool_has_room_for() -> None:
    pool = WorkerPool(None)
    gate = Gate()
    results = pool.imap_unordered(gate.task, range(8))
    wait_until(lambda: gate.running == 8, what="all eight run at once")
    for key in range(8):
        gate.event(key).set()
    assert sorted(results) == list(range(8))
    pool.close()


@pytest.mark.parametrize("maxsize", [None, 0])
def test_none_and_zero_maxsize_mean_no_bound_as_in_gevent(maxsize: int | None) -> None:
    pool = WorkerPool(None)
    gate = Gate()
    results = pool.imap_unordered(gate.task, range(4), maxsize=maxsize)
    wait_until(lambda: gate.running == 4, what="all four run at once")
    for key in range(4):
        gate.event(key).set()
    assert sorted(results) == [0, 1, 2, 3]
    pool.close()


def test_an_input_that_raises_is_reported_after_the_results_of_earlier_items() -> None:
    pool = WorkerPool(2)

    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise Boom("the input broke")

    for method in (pool.imap, pool.imap_unordered):
        results = method(double, items())
        got = [next(results), next(results)]
        assert sorted(got) == [2, 4]
        with pytest.raises(Boom, match="the input broke"):
            next(results)
        with pytest.raises(StopIteration):
            next(results)
    pool.close()


def test_closing_the_pool_mid_way_raises_pool_closed_after_the_running_results() -> None:
    pool = WorkerPool(2)
    gate = Gate()
    results = pool.imap(gate.task, range(5))
    wait_until(lambda: gate.running == 2, what="two tasks run")
    pool.close()
    gate.event(0).set()
    gate.event(1).set()
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(PoolClosed):
        next(results)
    assert pool.join(5)


def test_closing_the_iterator_stops_the_feeder(baseline: None) -> None:
    pool = WorkerPool(4, max_idle=60)
    started: list[int] = []
    results = pool.imap(started.append, range(100), maxsize=1)
    wait_until(lambda: len(started) == 1, what="the first item runs")
    results.close()
    gevent.sleep(0)
    assert len(started) == 1
    assert pool.join(5)
    pool.close()


def test_imap_races_with_culling_and_keeps_every_result() -> None:
    pool = WorkerPool(4, max_idle=1.0)
    clock = FakeClock()
    pool._set_clock(clock)
    gate = Gate()
    results = pool.imap(gate.task, range(12))
    for key in range(12):
        wait_until(lambda: gate.running > 0, what="a task runs")
        clock.advance(5)
        pool._cull()  # whatever is idle now is stale
        gate.event(key).set()
        assert next(results) == key
    with pytest.raises(StopIteration):
        next(results)
    stats = pool.stats()
    assert stats.tasks_completed == 12 and stats.busy == 0
    assert stats.culled > 0
    pool.close()


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maxsize", "error", "words"),
    [
        (-1, ValueError, "maxsize must be None or an int >= 1, got -1"),
        (1.5, TypeError, "maxsize must be None or an int >= 1, got 1.5 (float)"),
        ("2", TypeError, "maxsize must be None or an int >= 1, got '2' (str)"),
        (True, TypeError, "maxsize must be None or an int >= 1, got True (bool)"),
    ],
)
def test_bad_maxsize_is_refused_before_anything_runs(maxsize: object, error: type[Exception], words: str) -> None:
    pool = WorkerPool(2)
    for method in (pool.imap, pool.imap_unordered):
        with pytest.raises(error) as refused:
            method(double, range(3), maxsize=maxsize)  # type: ignore[arg-type]
        assert str(refused.value) == words
    assert pool.stats().tasks_started == 0
    pool.close()


def test_bad_calls_are_refused() -> None:
    pool = WorkerPool(2)
    for call in (
        lambda: pool.apply(42),  # type: ignore[arg-type]
        lambda: pool.map("not callable", [1]),  # type: ignore[arg-type]
        lambda: pool.imap(None, [1]),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="func must be callable"):
            call()
    with pytest.raises(TypeError, match=r"imap\(\) needs at least one iterable"):
        pool.imap(double)
    with pytest.raises(TypeError):
        pool.map(double, 5)  # type: ignore[arg-type]
    assert pool.stats().tasks_started == 0
    pool.close()
    for method, call in (
        ("map", lambda: pool.map(double, [1])),
        ("imap", lambda: pool.imap(double, [1])),
        ("imap_unordered", lambda: pool.imap_unordered(double, [1])),
    ):
        with pytest.raises(PoolClosed, match=rf"{method}\(\) called on a closed WorkerPool"):
            call()
    with pytest.raises(PoolClosed):
        pool.apply(double, (1,))
