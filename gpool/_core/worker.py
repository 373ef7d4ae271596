"""The worker greenlet and what it knows about the task it runs.

A worker is a raw greenlet (no ``gevent.Greenlet`` bookkeeping: that is the cost
gpool exists to avoid) that runs task after task and parks on its own
``gevent.queue.Channel`` in between. Its loop is :mod:`.loop`; the pool owns the
counters the loop updates.

A worker refers to its pool only weakly, as CPython's thread pool executor does: a
pool nobody holds is freed, and its idle workers exit.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional

from gevent.event import AsyncResult
from gevent.queue import Channel
from greenlet import greenlet

__all__ = ["NOT_STARTED", "Task", "Worker"]

# What a worker's channel carries: a task (with the AsyncResult that submit() hands
# its caller, else None), or None, which tells the worker to exit.
Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Optional[AsyncResult]]

LocalLink = Callable[[Any], object]

# A worker's start time while it has no task running: never overdue. One float for
# all workers (float("inf") in each __init__ was a 24-byte object per worker).
NOT_STARTED = float("inf")


class Worker(greenlet):  # type: ignore[misc]  # greenlet ships no stubs for subclassing
    """One reusable greenlet of a pool.

    ``rawlink``/``unlink`` are the hook ``gevent.local`` looks for on a greenlet: when a
    local is first touched here it registers a callback that drops this greenlet's
    values. gevent's own ``Greenlet`` calls those callbacks when it dies; a worker that
    isolates its tasks calls them after every task instead, so the next task starts
    with fresh locals (``__init__`` runs again for ``local`` subclasses).
    """

    __slots__ = (
        "busy",
        "channel",
        "detached",
        "doomed",
        "first_task",
        "idle_since",
        "kill_exc",
        "local_links",
        "pool_ref",
        "reported_no",
        "started",
        "task_no",
    )

    def __init__(self, run: Callable[..., Any], parent: Any, owner: Any) -> None:
        super().__init__(run, parent)
        # The pool this worker serves (gpool.detach() finds it from getcurrent()), held
        # weakly so that an idle worker does not keep a dropped pool alive.
        self.pool_ref: weakref.ReferenceType[Any] = weakref.ref(owner)
        # The task it starts with, taken by the worker loop as it begins. Not passed
        # to switch(): greenlet holds the arguments of run() until run() returns, so
        # the first task's arguments (a client's socket) would live as long as the
        # worker.
        self.first_task: Any = None
        # The channel it parks on while idle; None until it first parks (see
        # :mod:`.loop`). Typed as a Channel, as only parked workers (those on the
        # ready list) are ever sent anything.
        self.channel: Channel[Any] = None
        self.idle_since = 0.0
        # task_no counts the tasks handed to this worker (and so, once one ends, the
        # tasks it has run); with busy it names the task running now, so a kill aimed
        # at one task never lands on the next one.
        self.task_no = 0
        self.busy = False
        # True once the running task gave its slot back with detach().
        self.detached = False
        self.kill_exc: BaseException | None = None
        # For the watchdog (pools with deadlines only): when the running task started
        # (NOT_STARTED in between), the task whose stack it already logged, and whether
        # it killed this worker's task, which makes the worker retire.
        self.started = NOT_STARTED
        self.reported_no = 0
        self.doomed = False
        # Made on first use: most workers never touch a gevent.local (56 bytes each).
        self.local_links: list[LocalLink] | None = None

    @property
    def owner(self) -> Any:
        """The pool this worker serves, or None once that pool is gone."""
        return self.pool_ref()

    def throw_into_task(self, exc: BaseException) -> None:
        """Raise *exc* in the running task and mark the task as killed by it.

        The one way a task is killed (WorkerPool.kill() and the watchdog's hard
        deadline): the worker loop knows a kill from any other failure by this mark.
        """
        self.kill_exc = exc
        self.throw(exc)

    def rawlink(self, callback: LocalLink) -> None:
        if self.local_links is None:
            self.local_links = []
        self.local_links.append(callback)

    def unlink(self, callback: LocalLink) -> None:
        try:
            if self.local_links is not None:
                self.local_links.remove(callback)
        except ValueError:
            pass

    def forget_locals(self) -> None:
        """Drop every ``gevent.local`` value this greenlet holds. Never switches."""
        links = self.local_links
        if links:
            self.local_links = None
            for callback in links:
                callback(self)

    def __repr__(self) -> str:
        # Names the task, not a state: error reports print this after the task ended.
        return f"<gpool worker at {id(self):#x}, task #{self.task_no}>"
