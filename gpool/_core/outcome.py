"""How a task ended, decided in one place from what the worker saw.

Plain Python with no greenlet in sight, so the rules can be tested on their own.
"""

from __future__ import annotations

from gevent import GreenletExit

__all__ = ["COMPLETED", "FAILED", "FAILED_QUIETLY", "FATAL", "KILLED", "outcome_of"]

# The outcomes: plain strings compared by identity, not an Enum: on Python 3.11 each
# Enum member lookup costs 110 ns, and the worker loop makes up to four a task.
COMPLETED = "completed"
# A kill (WorkerPool.kill() or the watchdog's hard deadline) reached the task.
KILLED = "killed"
# An ordinary exception, for whoever holds the task's result (submit()): counted as a
# failure, not reported.
FAILED_QUIETLY = "failed quietly"
# An ordinary exception nobody will look at: counted and reported to the hub.
FAILED = "failed"
# A system error (SystemExit, KeyboardInterrupt): reported, and the worker retires.
FATAL = "fatal"


def outcome_of(error: BaseException | None, kill: BaseException | None, has_result: bool) -> str:
    """Sort a finished task into one of the outcomes above.

    *error* is what the task raised (None if it returned), *kill* the exception a
    kill threw into it (None if none did), *has_result* whether the caller holds an
    ``AsyncResult`` for it. A task a kill reached counts as killed however it ended,
    unless with a failure of its own: servers catch the kill to answer the client
    (pywsgi sends a 500) and return normally. ``GreenletExit`` is a normal end.
    """
    if error is None or isinstance(error, GreenletExit) or error is kill:
        return COMPLETED if kill is None else KILLED
    if not isinstance(error, Exception):
        return FATAL
    return FAILED_QUIETLY if has_result else FAILED
