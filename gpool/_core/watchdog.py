"""The stuck-task watchdog: optional soft and hard deadlines for every task.

A task stuck waiting (on a dead upstream, a lock never released, a client that never
reads) holds its slot for good, and a pool with enough of them stops serving. The
watchdog is one repeating loop timer per pool, so tasks pay nothing but a clock read
at their start. Each tick it looks at the tasks running now:

- past the *soft* deadline, a task's stack is logged once (WARNING), so the place it
  waits in shows up in the logs while it still runs;
- past the *hard* deadline, :class:`~gpool.DeadlineExceeded` is raised in the task
  (its ``finally`` blocks run and a server closes its connection) and the worker is
  retired once the task ends, since a task that had to be killed may have left it in
  a state no later task should meet.

It can only see a task that yields to the hub: a task spinning on the CPU blocks the
watchdog along with everything else in the process. Detached tasks (long-lived
streams, see :func:`gpool.detach`) are exempt.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from time import monotonic
from typing import Any, Callable

from .errors import DeadlineExceeded
from .worker import Worker

__all__ = ["Watchdog"]

_log = logging.getLogger("gpool")

# Ticks come at a tenth of the shortest deadline (so a deadline is acted on within
# 10% of it), never more often than every 5 ms nor less often than every second.
_TICKS_PER_DEADLINE = 10
_MIN_TICK = 0.005
_MAX_TICK = 1.0


class Watchdog:
    """Applies one pool's deadlines to its workers' running tasks."""

    def __init__(self, soft: float | None, hard: float | None, clock: Callable[[], float] = monotonic) -> None:
        deadlines = [d for d in (soft, hard) if d is not None]
        if not deadlines:
            raise ValueError("a Watchdog needs a soft or a hard deadline")
        self.soft = soft
        self.hard = hard
        self.interval = min(max(min(deadlines) / _TICKS_PER_DEADLINE, _MIN_TICK), _MAX_TICK)
        self.overdue = 0
        self.timed_out = 0
        self._timer: Any = None
        # The pool's clock (time.monotonic; tests substitute one and call tick()).
        self.clock = clock

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self, hub: Any, workers: Iterable[Worker]) -> None:
        """Start ticking on *hub*'s loop over *workers* (the pool's live set), unless
        it ticks already."""
        if self._timer is not None:
            return
        # ref=False: the watchdog must not keep gevent.wait() or the loop alive.
        timer = hub.loop.timer(self.interval, self.interval, ref=False)
        self._timer = timer
        timer.start(self.tick, workers)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def tick(self, workers: Iterable[Worker]) -> None:
        """Timer callback, in the hub: act on every running task past a deadline."""
        now = self.clock()
        soft, hard = self.soft, self.hard
        # A copy: throwing into a worker runs it, and a worker that ends its task and
        # retires leaves the set while we iterate.
        for worker in list(workers):
            if not worker.busy or worker.detached or worker.doomed:
                continue
            age = now - worker.started
            if hard is not None and age >= hard:
                self._kill(worker, age, hard)
            elif soft is not None and age >= soft and worker.reported_no != worker.task_no:
                worker.reported_no = worker.task_no
                self.overdue += 1
                _log.warning(
                    "task on %r has run for %.3fs, past soft_deadline=%gs; it is waiting in:\n%s",
                    worker,
                    age,
                    soft,
                    _stack(worker),
                )

    def _kill(self, worker: Worker, age: float, hard: float) -> None:
        self.timed_out += 1
        worker.doomed = True
        if worker.reported_no == worker.task_no:
            where = ""  # the soft deadline already logged the stack
        else:
            worker.reported_no = worker.task_no
            where = "; it was waiting in:\n" + _stack(worker)
        _log.error(
            "killing the task on %r: it ran for %.3fs, past hard_deadline=%gs; the worker retires%s",
            worker,
            age,
            hard,
            where,
        )
        worker.throw_into_task(DeadlineExceeded(f"task ran past hard_deadline={hard:g}s"))


def _stack(worker: Worker) -> str:
    frame = worker.gr_frame
    if frame is None:
        return "  (no Python frame)\n"
    return "".join(traceback.format_stack(frame))
