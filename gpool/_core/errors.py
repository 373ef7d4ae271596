"""Exceptions raised by gpool."""

from __future__ import annotations

__all__ = ["DeadlineExceeded", "PoolClosed", "PoolError", "PoolFull"]


class PoolError(RuntimeError):
    """Base class of the errors a :class:`~gpool.WorkerPool` raises itself."""


class PoolFull(PoolError):
    """Raised when a task cannot get a slot and waiting for one is not allowed.

    That happens when ``spawn`` is called in the hub (which must never block) or from
    inside one of the pool's own tasks (where waiting could deadlock) while every slot
    is taken. Use :meth:`~gpool.WorkerPool.try_spawn` to test for a free slot instead.
    """


class PoolClosed(PoolError):
    """Raised when a task is offered to a pool after :meth:`~gpool.WorkerPool.close`."""


class DeadlineExceeded(BaseException):
    """Raised inside a task that ran past its pool's ``hard_deadline``.

    A ``BaseException``, like ``gevent.Timeout`` and ``GreenletExit``, so the task's
    own ``except Exception`` clauses do not swallow it; ``finally`` blocks still run.
    The pool counts the task as killed and retires the worker it ran on.
    """
