"""Every option and argument is checked; errors name the parameter, the rule and the value."""

from __future__ import annotations

import math

import pytest

from gpool import WorkerPool
from gpool._core.options import check_pool_options

BAD_OPTIONS = pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 0}, ValueError, "size must be None or an int >= 1, got 0"),
        ({"size": -5}, ValueError, "size must be None or an int >= 1, got -5"),
        ({"size": 2.5}, TypeError, r"size must be None or an int >= 1, got 2.5 \(float\)"),
        ({"size": "10"}, TypeError, r"size must be None or an int >= 1, got '10' \(str\)"),
        ({"size": True}, TypeError, r"size must be None or an int >= 1, got True \(bool\)"),
        ({"max_idle": 0}, ValueError, "max_idle must be a positive, finite number of seconds, got 0"),
        ({"max_idle": -1}, ValueError, "max_idle must be a positive, finite number of seconds, got -1"),
        ({"max_idle": math.inf}, ValueError, "max_idle must be a positive, finite number of seconds, got inf"),
        ({"max_idle": math.nan}, ValueError, "max_idle must be a positive, finite number of seconds, got nan"),
        ({"max_idle": None}, TypeError, r"max_idle must be a positive number of seconds, got None \(NoneType\)"),
        ({"max_idle": "10"}, TypeError, r"max_idle must be a positive number of seconds, got '10' \(str\)"),
        ({"max_idle": False}, TypeError, r"max_idle must be a positive number of seconds, got False \(bool\)"),
        ({"min_idle": -1}, ValueError, "min_idle must be an int >= 0, got -1"),
        ({"min_idle": None}, TypeError, r"min_idle must be an int >= 0, got None \(NoneType\)"),
        ({"min_idle": 1.0}, TypeError, r"min_idle must be an int >= 0, got 1.0 \(float\)"),
        ({"size": 2, "min_idle": 3}, ValueError, r"min_idle must not exceed size \(2\), got 3"),
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker must be None or an int >= 1, got 0"),
        (
            {"max_tasks_per_worker": "5"},
            TypeError,
            r"max_tasks_per_worker must be None or an int >= 1, got '5' \(str\)",
        ),
        ({"isolate": 1}, TypeError, r"isolate must be True or False, got 1 \(int\)"),
        ({"isolate": None}, TypeError, r"isolate must be True or False, got None \(NoneType\)"),
        ({"log_all_errors": "yes"}, TypeError, r"log_all_errors must be True or False, got 'yes' \(str\)"),
        ({"size": math.nan}, TypeError, r"size must be None or an int >= 1, got nan \(float\)"),
        ({"max_idle": 10**400}, ValueError, "max_idle must be a positive, finite number of seconds, got 10{400}"),
        ({"min_idle": True}, TypeError, r"min_idle must be an int >= 0, got True \(bool\)"),
        ({"max_tasks_per_worker": -1}, ValueError, "max_tasks_per_worker must be None or an int >= 1, got -1"),
        (
            {"max_tasks_per_worker": 2.0},
            TypeError,
            r"max_tasks_per_worker must be None or an int >= 1, got 2.0 \(float\)",
        ),
        ({"overflow": "REJECT"}, ValueError, "overflow must be 'backlog' or 'reject', got 'REJECT'"),
        # A wrong type is a ValueError here, unlike every other option (pinned in test_overload.py).
        ({"overflow": b"reject"}, ValueError, "overflow must be 'backlog' or 'reject', got b'reject'"),
        ({"on_reject": 5}, TypeError, r"on_reject must be None or a callable, got 5 \(int\)"),
        ({"max_detached": True}, TypeError, r"max_detached must be None or an int >= 0, got True \(bool\)"),
        ({"max_detached": "3"}, TypeError, r"max_detached must be None or an int >= 0, got '3' \(str\)"),
        ({"soft_deadline": "1"}, TypeError, r"soft_deadline must be a positive number of seconds, got '1' \(str\)"),
        ({"hard_deadline": 0}, ValueError, "hard_deadline must be a positive, finite number of seconds, got 0"),
        (
            {"soft_deadline": 2, "hard_deadline": 1},
            ValueError,
            r"soft_deadline must be less than hard_deadline \(1\), got 2",
        ),
        # The first bad option in signature order is the one reported.
        ({"size": 0, "max_idle": -1, "overflow": "drop"}, ValueError, "size must be None or an int >= 1, got 0"),
        # A rule between options comes in order too: right after the later of them.
        (
            {"size": 1, "min_idle": 5, "max_tasks_per_worker": 0},
            ValueError,
            r"min_idle must not exceed size \(1\), got 5",
        ),
    ],
)


@BAD_OPTIONS
def test_bad_options_are_rejected_with_a_clear_message(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        WorkerPool(**kwargs)


@BAD_OPTIONS
def test_the_options_table_refuses_what_workerpool_refuses(kwargs: dict, error: type[Exception], message: str) -> None:
    # gpool serve, the gunicorn workers and run_gunicorn check with it, without a pool.
    with pytest.raises(error, match=f"^{message}$"):
        check_pool_options(**kwargs)


def test_the_options_table_fills_in_the_defaults() -> None:
    assert check_pool_options(size=3, soft_deadline=1) == {
        "size": 3,
        "max_idle": 10.0,
        "min_idle": 0,
        "max_tasks_per_worker": None,
        "isolate": True,
        "log_all_errors": False,
        "overflow": "backlog",
        "on_reject": None,
        "max_detached": None,
        "soft_deadline": 1.0,
        "hard_deadline": None,
    }
    with pytest.raises(TypeError, match="unexpected option 'maxidle'"):
        check_pool_options(maxidle=1)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        WorkerPool(10, 5.0)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size": 1},
        {"size": None},
        {"max_idle": 0.001},
        {"max_idle": 3},
        {"size": 3, "min_idle": 3},
        {"max_tasks_per_worker": 1},
        {"isolate": False, "log_all_errors": True},
        {"size": 10**30},
        {"size": None, "min_idle": 5},
        {"size": 2, "max_detached": 10},  # detached tasks hold no slot: may outnumber size
        {"size": 2, "max_detached": 0},
        # Ignored without overflow="reject", and allowed: a deployment sets its handler
        # once and switches overflow by configuration (the gunicorn worker does).
        {"size": 2, "on_reject": print},
        {"size": 2, "overflow": "reject", "on_reject": print},
    ],
)
def test_good_options_are_accepted(kwargs: dict) -> None:
    pool = WorkerPool(**kwargs)
    assert pool.size == kwargs.get("size")


@pytest.mark.parametrize("method", ["spawn", "try_spawn", "submit"])
@pytest.mark.parametrize("func", [None, 42, "print"])
def test_non_callable_task_is_rejected_before_anything_happens(method: str, func: object) -> None:
    pool = WorkerPool(2)
    before = pool.stats()
    with pytest.raises(TypeError, match=f"^func must be callable, got {func!r}"):
        getattr(pool, method)(func)
    assert pool.stats() == before
    assert len(pool) == 0


def test_size_is_read_only() -> None:
    pool = WorkerPool(2)
    with pytest.raises(AttributeError):
        pool.size = 3  # type: ignore[misc]
