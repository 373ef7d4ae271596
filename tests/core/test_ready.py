"""The ready list on its own, with fake workers and a fake clock."""

from __future__ import annotations

import pytest

from gpool._core.ready import ReadyStack


class FakeWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.idle_since = -1.0


def stack_of(*released: tuple[str, float]) -> ReadyStack[FakeWorker]:
    stack: ReadyStack[FakeWorker] = ReadyStack()
    for name, when in released:
        # As the pool releases a worker: stamp the time, then append at the hot end.
        worker = FakeWorker(name)
        worker.idle_since = when
        stack.append(worker)
    return stack


def test_pop_returns_most_recently_released() -> None:
    stack = stack_of(("a", 1.0), ("b", 2.0), ("c", 3.0))
    assert [stack.pop().name for _ in range(3)] == ["c", "b", "a"]
    assert not stack
    with pytest.raises(IndexError):
        stack.pop()


def test_oldest_release_is_the_cold_ends_stamp() -> None:
    stack = stack_of(("a", 5.0))
    assert stack.oldest_release() == 5.0
    assert stack.pop().idle_since == 5.0


def test_pop_stale_takes_the_cold_end_only() -> None:
    stack = stack_of(("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0))
    stale = stack.pop_stale(released_before=3.0, keep=0)
    assert [w.name for w in stale] == ["a", "b"]
    assert len(stack) == 2
    assert stack.oldest_release() == 3.0
    assert stack.pop().name == "d"


def test_pop_stale_keeps_the_hottest_workers() -> None:
    stack = stack_of(("a", 1.0), ("b", 2.0), ("c", 3.0))
    stale = stack.pop_stale(released_before=10.0, keep=1)
    assert [w.name for w in stale] == ["a", "b"]
    assert [stack.pop().name] == ["c"]


def test_pop_stale_with_nothing_stale() -> None:
    stack = stack_of(("a", 5.0))
    assert stack.pop_stale(released_before=5.0, keep=0) == []
    assert len(stack) == 1


def test_pop_all_empties_coldest_first() -> None:
    stack = stack_of(("a", 1.0), ("b", 2.0))
    assert [w.name for w in stack.pop_all()] == ["a", "b"]
    assert len(stack) == 0
