"""The worker loop: the body of every worker greenlet.

Run a task, sort how it ended (:func:`.outcome.outcome_of`), let the pool settle it
(``WorkerPool._settle``: count it, give its slot back, retire or park the worker),
then wait on the worker's channel for the next. Between tasks the loop holds its pool
only through the worker's weak reference, so a pool nobody holds can be freed.
"""

from __future__ import annotations

import logging
from typing import Callable

from gevent import get_hub
from greenlet import getcurrent

from .outcome import COMPLETED, outcome_of
from .worker import NOT_STARTED, Task, Worker

__all__ = ["work"]

_log = logging.getLogger("gpool")


def work() -> None:
    """A worker greenlet's body: run tasks until told to stop, retired, or the pool is gone.

    While parked it holds its pool only weakly (see :mod:`.worker`), so every trip
    round the loop starts by asking whether the pool still exists.
    """
    worker: Worker = getcurrent()
    task: Task | None = worker.first_task
    worker.first_task = None
    # Locals for what is fixed for the worker's life, none of which holds the pool:
    # the weak reference itself (worker.pool_ref() on every trip is a generic method
    # lookup on a slot), the channel's get once it exists, and two of the pool's
    # settings. Together with _settle's common path first, 640 of 20,500 instructions
    # a task dispatching to 1,000 parked workers (callgrind, Python 3.11).
    pool_ref = worker.pool_ref
    get_task: Callable[[], Task | None] | None = None
    pool = pool_ref()
    watched = pool is not None and pool._watchdog is not None
    isolate = pool is not None and pool._isolate
    while task is not None:
        if pool is None:
            _run_orphan(task)  # the pool was dropped while this task was on its way
            return
        func, args, kwargs, result = task
        task = None
        if watched:
            worker.started = pool._clock()
        error: BaseException | None = None
        try:
            value = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every outcome is accounted for
            error = exc
            value = None
        # No switch may happen between the task's end and this line: kill() and
        # the watchdog decide whether a worker is inside a task by this flag.
        worker.busy = False
        if watched:
            worker.started = NOT_STARTED
        # Drop the task's references (sockets, requests) before parking: an idle
        # greenlet must not keep a client's connection alive.
        func = args = kwargs = None  # type: ignore[assignment]
        if isolate:
            # The next task starts in a new, empty contextvars context. Cheaper than
            # running each task inside Context().run(), and it drops this task's
            # values now rather than when the next task starts.
            worker.gr_context = None
            if worker.local_links:
                worker.forget_locals()
        # The common end is decided here without the call (outcome_of agrees): 730 of
        # 23,100 instructions a task in-process dispatch (callgrind, Python 3.11).
        kill = worker.kill_exc
        outcome = COMPLETED if error is None and kill is None else outcome_of(error, kill, result is not None)
        if result is not None:
            if error is None:
                result.set(value)
            else:
                result.set_exception(error)
            result = None
        value = None
        if not pool._settle(worker, outcome, error):
            break
        error = None
        # Parked: wait holding no reference to the pool, until spawn() puts a task
        # (or close(), culling or the pool's finalizer puts None) on the channel.
        pool = None
        if get_task is None:
            get_task = worker.channel.get
        while True:
            try:
                task = get_task()
                break
            except BaseException as stray:  # noqa: BLE001 - see below
                # Only a throw aimed at the greenlet rather than a task gets here: the
                # classic case is a gevent.Timeout an earlier task started and never
                # cancelled. The worker is on the ready list; it must not die there,
                # so it notes the stray and parks again.
                _log.debug("idle worker %r ignored a stray %r", worker, stray)
        pool = pool_ref()
    if pool is not None:
        pool._retire(worker)


def _run_orphan(task: Task) -> None:
    """Run a task whose pool is gone: nothing is left to count it, but it is not lost."""
    func, args, kwargs, result = task
    try:
        value = func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported, or handed to the result
        if result is not None:
            result.set_exception(exc)
        else:
            get_hub().handle_error(getcurrent(), type(exc), exc, exc.__traceback__)
    else:
        if result is not None:
            result.set(value)
