"""A pool's slot accounting (:class:`gpool._core.slots.SlotCount`) on its own.

The pool counts ``busy`` (tasks holding a slot) and ``detached`` (tasks running
without one) directly on its hot paths; the methods name the rules read off them.
"""

from __future__ import annotations

import pytest

from gpool._core.slots import SlotCount


def count_of(size: int | None, busy: int = 0, detached: int = 0, max_detached: int | None = None) -> SlotCount:
    count = SlotCount(size, size if max_detached is None else max_detached)
    count.busy, count.detached = busy, detached
    return count


def test_a_new_count_has_every_slot_free() -> None:
    count = SlotCount(3, 3)
    assert (count.size, count.max_detached, count.busy, count.detached) == (3, 3, 0, 0)
    assert not count.all_taken()
    assert count.free() == 3


@pytest.mark.parametrize(("busy", "taken", "free"), [(0, False, 3), (1, False, 2), (2, False, 1), (3, True, 0)])
def test_all_taken_and_free_follow_busy(busy: int, taken: bool, free: int) -> None:
    count = count_of(3, busy=busy)
    assert count.all_taken() is taken
    assert count.free() == free


def test_free_never_goes_negative() -> None:
    # The pool never lets busy pass size, but free() is guarded all the same.
    count = count_of(2, busy=3)
    assert count.all_taken()
    assert count.free() == 0


def test_detached_tasks_hold_no_slot() -> None:
    count = count_of(2, busy=0, detached=5, max_detached=10)
    assert not count.all_taken()
    assert count.free() == 2


@pytest.mark.parametrize("busy", [0, 1, 1_000_000])
def test_an_unbounded_count_is_never_full_and_answers_one_free(busy: int) -> None:
    count = SlotCount(None, None)
    count.busy = busy
    assert count.size is None
    assert not count.all_taken()
    assert count.free() == 1  # gevent's Pool.free_count() answer when unbounded


def test_detach_moves_a_task_from_busy_to_detached() -> None:
    count = count_of(2, busy=2)
    assert count.all_taken()
    count.detach()
    assert (count.busy, count.detached) == (1, 1)
    assert not count.all_taken()
    assert count.free() == 1
    count.detach()
    assert (count.busy, count.detached) == (0, 2)
    assert count.free() == 2


@pytest.mark.parametrize(("detached", "allowed"), [(0, True), (1, True), (2, False), (3, False)])
def test_can_detach_up_to_max_detached(detached: int, allowed: bool) -> None:
    count = count_of(4, busy=1, detached=detached, max_detached=2)
    assert count.can_detach() is allowed


def test_max_detached_zero_allows_none_and_none_allows_any() -> None:
    assert count_of(4, busy=1, max_detached=0).can_detach() is False
    unlimited = SlotCount(None, None)
    unlimited.busy, unlimited.detached = 1, 1_000_000
    assert unlimited.can_detach() is True


def test_a_task_ends_by_giving_its_slot_back() -> None:
    # The pool's _settle ends a task inline: a slot holder decrements busy, a
    # detached task decrements detached (it had no slot to give).
    count = count_of(2, busy=2)
    count.busy -= 1
    assert (count.free(), count.all_taken()) == (1, False)
    count.detach()
    count.detached -= 1
    assert (count.busy, count.detached, count.free()) == (0, 0, 2)


@pytest.mark.parametrize(
    ("busy", "idle", "exceeds"),
    [
        (0, 0, False),  # one idle worker for two free slots
        (0, 1, False),  # two idle for two free
        (0, 2, True),  # a third would outnumber them
        (1, 0, False),
        (1, 1, True),  # one free slot, already one idle worker
        (2, 0, True),  # no free slot at all
    ],
)
def test_idle_would_exceed_free(busy: int, idle: int, exceeds: bool) -> None:
    count = count_of(2, busy=busy, detached=1)
    assert count.idle_would_exceed_free(idle) is exceeds


def test_idle_never_exceeds_an_unbounded_pool() -> None:
    count = SlotCount(None, None)
    count.busy, count.detached = 10, 10
    assert count.idle_would_exceed_free(1_000_000) is False


def test_the_rules_match_what_a_detached_task_ending_does() -> None:
    # Size 2: a task detaches (slot back), two new tasks take both slots, the detached
    # one ends: parking its worker would leave an idle worker and no free slot.
    count = count_of(2, busy=1)
    count.detach()
    count.busy += 2
    assert count.all_taken()
    count.detached -= 1  # the detached task ends
    assert count.idle_would_exceed_free(0) is True
    # One of the others ends: now a slot is free and one idle worker may stand for it.
    count.busy -= 1
    assert count.idle_would_exceed_free(0) is False
    assert count.idle_would_exceed_free(1) is True
