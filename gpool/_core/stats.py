"""A point-in-time record of a pool's counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStats"]


@dataclass(frozen=True)
class PoolStats:
    """What :meth:`gpool.WorkerPool.stats` returns.

    Gauges describe this instant; counters only grow over the pool's life. Once the
    pool is quiet, ``tasks_started == tasks_completed + tasks_failed + tasks_killed``
    (rejected connections never start: they are counted apart).
    """

    size: int | None
    """The pool's capacity (None: unbounded)."""
    workers: int
    """Worker greenlets alive now, idle or busy."""
    idle: int
    """Workers parked on the ready list, waiting for a task."""
    busy: int
    """Tasks running now (also ``len(pool)``)."""
    peak_workers: int
    """The most workers alive at once."""
    workers_started: int
    """Worker greenlets ever created."""
    tasks_started: int
    """Tasks handed to a worker."""
    tasks_completed: int
    """Tasks that returned (or ended with ``GreenletExit`` of their own)."""
    tasks_failed: int
    """Tasks that raised an exception other than a kill (for :meth:`~gpool.WorkerPool.submit`,
    also those whose exception went to their ``AsyncResult``)."""
    tasks_killed: int
    """Tasks ended by :meth:`gpool.WorkerPool.kill` (which ``server.stop()`` and a drain
    call past their timeout) or killed at ``hard_deadline`` (those are also counted in
    ``tasks_timed_out``)."""
    culled: int
    """Workers retired after idling longer than ``max_idle``."""
    retired: int
    """Workers that exited for any other reason: ``close()``, the recycle limit
    (``max_tasks_per_worker``), their task killed at ``hard_deadline`` or raising a system
    error, or a detached task ending with no free slot to park in."""
    rejected: int = 0
    """Connections turned away while full (``overflow="reject"``)."""
    detached: int = 0
    """Tasks running now without a slot, after :func:`gpool.detach`."""
    tasks_detached: int = 0
    """Tasks ever detached."""
    tasks_overdue: int = 0
    """Tasks that ran past ``soft_deadline`` (their stack was logged)."""
    tasks_timed_out: int = 0
    """Tasks killed at ``hard_deadline`` (also counted in ``tasks_killed``)."""
