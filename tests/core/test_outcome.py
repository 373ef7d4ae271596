"""How a task ended (:func:`gpool._core.outcome.outcome_of`), rule by rule, on its own.

``outcome_of(error, kill, has_result)``: *error* is what the task raised (None if it
returned), *kill* what a kill threw into it (None if none did), *has_result* whether
someone holds an ``AsyncResult`` for it (``submit()``).
"""

from __future__ import annotations

from typing import Optional

import pytest
from gevent import GreenletExit

from gpool import DeadlineExceeded
from gpool._core.outcome import COMPLETED, FAILED, FAILED_QUIETLY, FATAL, KILLED, outcome_of

OUTCOMES = (COMPLETED, KILLED, FAILED_QUIETLY, FAILED, FATAL)

# One instance each, so "the kill itself" can be told from an equal exception.
KILL_EXIT = GreenletExit()  # pool.kill()'s default
KILL_DEADLINE = DeadlineExceeded("task ran past hard_deadline=1s")  # the watchdog's
KILL_ERROR = ValueError("killed with an Exception")  # pool.kill(ValueError(...))


class CustomExit(GreenletExit):
    pass


Row = tuple[str, Optional[BaseException], Optional[BaseException], str, str]

ROWS: list[Row] = [
    # -- no kill: how the task itself ended --------------------------------------
    ("returned normally", None, None, COMPLETED, COMPLETED),
    ("raised GreenletExit", GreenletExit(), None, COMPLETED, COMPLETED),
    ("raised a GreenletExit subclass", CustomExit(), None, COMPLETED, COMPLETED),
    ("raised an Exception", ValueError("boom"), None, FAILED, FAILED_QUIETLY),
    ("raised an OSError", ConnectionResetError(), None, FAILED, FAILED_QUIETLY),
    ("raised SystemExit", SystemExit(3), None, FATAL, FATAL),
    ("raised KeyboardInterrupt", KeyboardInterrupt(), None, FATAL, FATAL),
    # A BaseException no kill threw (a stray deadline error, a gevent.Timeout the
    # task never caught) is a system error like SystemExit.
    ("raised DeadlineExceeded itself", DeadlineExceeded("own"), None, FATAL, FATAL),
    # -- killed -----------------------------------------------------------------------
    ("killed, raised the kill (GreenletExit)", KILL_EXIT, KILL_EXIT, KILLED, KILLED),
    ("killed, raised the kill (DeadlineExceeded)", KILL_DEADLINE, KILL_DEADLINE, KILLED, KILLED),
    # The identity rule wins over "an Exception is a failure".
    ("killed, raised the kill (an Exception)", KILL_ERROR, KILL_ERROR, KILLED, KILLED),
    # Servers catch the kill to answer the client (pywsgi sends a 500) and return.
    ("killed, caught it and returned", None, KILL_DEADLINE, KILLED, KILLED),
    ("killed, then raised GreenletExit", GreenletExit(), KILL_DEADLINE, KILLED, KILLED),
    # A failure of its own after the kill is that failure, not the kill.
    ("killed, then raised another Exception", ValueError("in cleanup"), KILL_DEADLINE, FAILED, FAILED_QUIETLY),
    (
        "killed, then raised an equal but different Exception",
        ValueError("killed with an Exception"),
        KILL_ERROR,
        FAILED,
        FAILED_QUIETLY,
    ),
    ("killed, then raised SystemExit", SystemExit(1), KILL_EXIT, FATAL, FATAL),
    ("killed, then raised KeyboardInterrupt", KeyboardInterrupt(), KILL_DEADLINE, FATAL, FATAL),
    (
        "killed, then raised a different DeadlineExceeded",
        DeadlineExceeded("another"),
        KILL_DEADLINE,
        FATAL,
        FATAL,
    ),
]


@pytest.mark.parametrize(
    ("error", "kill", "without_result", "with_result"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_outcome_rules(
    error: BaseException | None, kill: BaseException | None, without_result: str, with_result: str
) -> None:
    assert outcome_of(error, kill, False) is without_result
    assert outcome_of(error, kill, True) is with_result


def test_only_an_ordinary_failure_depends_on_who_holds_the_result() -> None:
    for _name, error, kill, without_result, with_result in ROWS:
        if without_result is not with_result:
            assert (without_result, with_result) == (FAILED, FAILED_QUIETLY)
            assert isinstance(error, Exception) and error is not kill


def test_the_outcomes_are_distinct_and_returned_by_identity() -> None:
    # The pool compares outcomes with `is`: outcome_of must return these very objects.
    assert len(set(OUTCOMES)) == len(OUTCOMES)
    for _name, error, kill, _without, _with in ROWS:
        assert any(outcome_of(error, kill, False) is outcome for outcome in OUTCOMES)
        assert any(outcome_of(error, kill, True) is outcome for outcome in OUTCOMES)


def test_every_outcome_is_reachable() -> None:
    reached = {row[3] for row in ROWS} | {row[4] for row in ROWS}
    assert reached == set(OUTCOMES)
