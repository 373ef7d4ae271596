"""The floors: the least a greenlet-reusing pool can cost, as measuring sticks.

Not products, and not usable pools: they exist so the report can say what share of
the achievable gain over ``gevent.pool.Pool`` WorkerPool takes.

- :class:`FloorPool` (the ``floor`` strategy): WorkerPool's design and nothing else.
  Idle workers wait on a LIFO list, each on its own ``gevent.queue.Channel``; no size
  limit, no counters, no isolation, no culling. Passed to servers as ``spawn=`` (its
  bound ``spawn``, so the server keeps no pool bookkeeping either).
- :class:`BareHandOff` (the dispatch scenario's ``handoff`` row): not even a channel;
  the task is switched straight into a parked raw greenlet.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["BareHandOff", "FloorPool"]

_Task = tuple[Callable[..., Any], tuple[Any, ...]]


class FloorPool:
    """A LIFO list of parked greenlets, each with its own Channel. Nothing else."""

    def __init__(self) -> None:
        import gevent

        self._hub = gevent.get_hub()
        self._ready: list[Any] = []  # the channels of the parked workers, hottest last

    def _work(self, task: _Task) -> None:
        from gevent.queue import Channel

        channel: Channel[_Task] = Channel()
        ready = self._ready
        get = channel.get
        while True:
            func, args = task
            try:
                func(*args)
            except Exception:  # noqa: BLE001 - a raw greenlet's error would end up in the hub
                self._hub.handle_error(None, *sys.exc_info())
            # Not bookkeeping but correctness: a parked worker must not keep the last
            # client's socket alive (churn clients wait for the close).
            func = args = task = None  # type: ignore[assignment]
            ready.append(channel)
            task = get()

    def spawn(self, func: Callable[..., Any], *args: Any) -> None:
        from greenlet import getcurrent, greenlet

        hub = self._hub
        in_hub = getcurrent() is hub
        if self._ready:
            put = self._ready.pop().put
            if in_hub:  # Channel.put in the hub switches straight into the worker
                put((func, args))
            else:
                hub.loop.run_callback(put, (func, args))
        else:
            worker = greenlet(self._work, hub)
            if in_hub:
                worker.switch((func, args))
            else:
                hub.loop.run_callback(worker.switch, (func, args))


class BareHandOff:
    """A task is switched straight into a parked raw greenlet, which runs it and parks
    again in the hub. Only the dispatch scenario uses it (from the hub)."""

    def __init__(self) -> None:
        import gevent

        self._hub = gevent.get_hub()
        self._parked: list[Any] = []
        self._running = 0

    def _serve(self, task: _Task) -> None:
        from greenlet import getcurrent

        me = getcurrent()
        parked = self._parked
        park = self._hub.switch
        while True:
            func, args = task
            func(*args)
            self._running -= 1
            parked.append(me)
            task = park()

    def spawn(self, func: Callable[..., Any], *args: Any) -> None:
        from greenlet import greenlet

        self._running += 1
        if self._parked:
            self._parked.pop().switch((func, args))
        else:
            greenlet(self._serve, self._hub).switch((func, args))

    def __len__(self) -> int:
        return self._running
