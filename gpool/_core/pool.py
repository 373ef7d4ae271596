"""WorkerPool: fasthttp's workerPool design, carried over to gevent.

Reading order: ``spawn`` (hand a task to the hottest idle worker, or start one), then
``_settle`` (what the worker loop of :mod:`.loop` calls after each task: count it,
give its slot back, retire or park the worker), then culling and the lifecycle
calls. The slot rules are in :mod:`.slots`, the outcome rules in :mod:`.outcome`,
deadlines in :mod:`.watchdog`; turning away a connection on a full pool is the
serving layer's (:mod:`.overflow`).
"""

from __future__ import annotations

import logging
import weakref
from time import monotonic
from types import TracebackType
from typing import Any, Callable, Iterable

from gevent import GreenletExit, Timeout, sleep
from gevent.event import AsyncResult, Event
from gevent.exceptions import BlockingSwitchOutError
from gevent.hub import Waiter, get_hub
from gevent.queue import Channel
from greenlet import getcurrent

from . import mapping
from .errorlog import report
from .errors import PoolClosed, PoolFull
from .loop import work
from .mapping import MapResults
from .options import check_pool_option, check_pool_options
from .outcome import COMPLETED, FAILED, FATAL, KILLED
from .overflow import OverloadLog, answer_for
from .ready import ReadyStack
from .slots import SlotCount, SlotSignal
from .stats import PoolStats
from .validate import check_bool, check_exception, check_timeout
from .watchdog import Watchdog
from .worker import Task, Worker

__all__ = ["WorkerPool", "current_pool", "detach"]

_log = logging.getLogger("gpool")

# Called at the end of every task with the worker, its task number and the task's
# failure (None on success, on GreenletExit and on a kill). Used by join() and
# kill(block=True); must not switch.
TaskEndWatcher = Callable[[Worker, int, "BaseException | None"], None]

# libev's timers run on the loop's cached clock, which can lag time.monotonic() a
# little; a worker this close to its deadline is culled now rather than re-arming the
# timer for a fraction of a millisecond.
_CULL_SLACK = 0.001


class WorkerPool:
    """A pool of reusable greenlets for gevent servers.

    gevent's default ``spawn`` (and ``gevent.pool.Pool``) creates a ``Greenlet`` per
    connection: allocation, a link list, a trip through the event loop before the
    handler runs. A server that takes thousands of short connections a second spends
    much of its time on that. A ``WorkerPool`` keeps finished greenlets ("workers")
    parked on a ready list instead and hands each new task to the most recently parked
    one, switching straight into it when called from the hub, as servers do. Workers
    idle longer than *max_idle* seconds are retired, oldest first; at most *size* tasks
    run at once.

    Use it wherever gevent accepts a pool::

        StreamServer(("127.0.0.1", 0), handle, spawn=WorkerPool(1000))
        WSGIServer(("127.0.0.1", 0), app, spawn=WorkerPool(1000))

    :param size: the most tasks running at once, and so the most workers; ``None``
        (the default) means no limit, like ``gevent.pool.Pool()``.
    :param max_idle: seconds a worker may sit idle before it is retired.
    :param min_idle: idle workers kept warm however long they idle.
    :param max_tasks_per_worker: retire a worker after this many tasks (``None``: never).
    :param isolate: start every task with an empty ``contextvars`` context and with no
        ``gevent.local`` (so, monkey-patched, no ``threading.local``) values left by an
        earlier task on the same worker. On by default; turning it off saves well under
        a microsecond per task and lets one client's state reach the next.
    :param log_all_errors: also report network errors that only mean the client went
        away (broken pipe, reset, timeout), which otherwise go to the ``gpool`` logger
        at DEBUG.
    :param overflow: what a server does with a new connection while every slot is
        busy. ``"backlog"`` (gevent's behaviour): stop accepting until a slot frees, so
        clients wait in the listen backlog. ``"reject"``: keep accepting and turn the
        excess away at once: ``pywsgi`` clients get ``503 Service Unavailable`` with
        ``Retry-After``; other connections go to *on_reject*, then are closed. Counted
        in ``stats().rejected`` and logged (WARNING) at most once a minute.
    :param on_reject: with ``overflow="reject"``, called as ``on_reject(socket,
        address)`` in the hub for each raw TCP connection turned away, before it is
        closed; it must not block (a short ``socket.send`` is fine).
    :param max_detached: the most tasks that may hold no slot after :func:`gpool.detach`
        (long-lived streams); ``None`` (the default) means the same as *size*.
    :param soft_deadline: seconds a task may run before its stack is logged (once, at
        WARNING, on the ``gpool`` logger) to show where it is stuck; ``None`` (the
        default) turns it off.
    :param hard_deadline: seconds a task may run before :class:`~gpool.DeadlineExceeded`
        is raised in it and its worker is retired once it ends; ``None`` (the default)
        turns it off. Must exceed *soft_deadline* when both are set. Both deadlines are
        checked by one timer per pool (to within a tenth of the shorter one); detached
        tasks are exempt, and a task that never yields to the hub cannot be caught.
    """

    # Slots, not an instance dict: with this many attributes CPython 3.11 keeps no
    # shared keys for the dict, and every attribute the hot paths touch cost a dict
    # lookup (LOAD_ATTR_WITH_HINT). Slotted, each is read at a fixed offset: 544
    # instructions a task less in-process dispatch (callgrind).
    __slots__ = (
        "__weakref__",
        "_clock",
        "_closed",
        "_count",
        "_cull_timer",
        "_culled",
        "_detach_follows_size",
        "_hub",
        "_isolate",
        "_log_all_errors",
        "_max_idle",
        "_max_tasks",
        "_min_idle",
        "_on_reject",
        "_overflow",
        "_overload_log",
        "_peak_workers",
        "_ready",
        "_reject",
        "_rejected",
        "_retired",
        "_signal",
        "_tasks_completed",
        "_tasks_detached",
        "_tasks_failed",
        "_tasks_killed",
        "_watchdog",
        "_watchers",
        "_workers",
        "_workers_started",
    )

    def __init__(
        self,
        size: int | None = None,
        *,
        max_idle: float = 10.0,
        min_idle: int = 0,
        max_tasks_per_worker: int | None = None,
        isolate: bool = True,
        log_all_errors: bool = False,
        overflow: str = "backlog",
        on_reject: Callable[..., Any] | None = None,
        max_detached: int | None = None,
        soft_deadline: float | None = None,
        hard_deadline: float | None = None,
    ) -> None:
        # The options table's rules, the same ones gpool serve and the gunicorn workers
        # apply. (Imported here for now; it belongs with the module's imports.)
        options = check_pool_options(
            size=size,
            max_idle=max_idle,
            min_idle=min_idle,
            max_tasks_per_worker=max_tasks_per_worker,
            isolate=isolate,
            log_all_errors=log_all_errors,
            overflow=overflow,
            on_reject=on_reject,
            max_detached=max_detached,
            soft_deadline=soft_deadline,
            hard_deadline=hard_deadline,
        )
        size = options["size"]
        self._max_idle: float = options["max_idle"]
        self._min_idle: int = options["min_idle"]
        self._max_tasks: int | None = options["max_tasks_per_worker"]
        self._isolate: bool = options["isolate"]
        self._log_all_errors: bool = options["log_all_errors"]
        self._overflow: str = options["overflow"]
        self._reject = self._overflow == "reject"
        self._on_reject: Callable[..., Any] | None = options["on_reject"]
        detach_limit: int | None = options["max_detached"]
        # Unless given, the detach limit is the size, and follows it through resize().
        self._detach_follows_size = detach_limit is None
        soft: float | None = options["soft_deadline"]
        hard: float | None = options["hard_deadline"]
        self._watchdog = None if soft is None and hard is None else Watchdog(soft, hard)

        # The hub is bound on first use, not here: gunicorn builds worker classes (and
        # users build pools) before forking, and no gevent object should exist yet.
        self._hub: Any = None
        # Where idle times and task start times come from; tests substitute a fake one
        # with _set_clock() and run the timers' callbacks (_cull, Watchdog.tick) by hand.
        self._clock: Callable[[], float] = monotonic
        self._ready: ReadyStack[Worker] = ReadyStack()
        self._workers: set[Worker] = set()
        self._count = SlotCount(size, size if detach_limit is None else detach_limit)
        self._closed = False
        self._cull_timer: Any = None
        self._signal = SlotSignal(self._has_free_slot, self._get_hub)
        self._watchers: list[TaskEndWatcher] = []
        # A pool nobody holds is freed (its workers hold it weakly); its idle workers
        # are then told to exit. The finalizer holds the ready list, not the pool.
        weakref.finalize(self, _dismiss_idle, self._ready).atexit = False

        self._peak_workers = 0
        self._workers_started = 0
        self._tasks_completed = 0
        self._tasks_failed = 0
        self._tasks_killed = 0
        self._culled = 0
        self._retired = 0
        self._rejected = 0
        self._tasks_detached = 0
        self._overload_log = OverloadLog()

    # -- the gevent server contract -------------------------------------------------

    @property
    def size(self) -> int | None:
        """The most tasks that run at once (``None``: unbounded)."""
        return self._count.size

    @property
    def isolate(self) -> bool:
        """Whether tasks (and, in gpool's servers, requests) start with no
        ``contextvars`` or ``gevent.local`` values left by earlier ones."""
        return self._isolate

    @property
    def _semaphore(self) -> SlotSignal:
        """Compatibility shim: gevent servers call ``pool._semaphore.rawlink(cb)`` and
        ``unlink(cb)`` to learn when a full pool frees a slot. See :mod:`gpool._core.slots`."""
        return self._signal

    def full(self) -> bool:
        """True when a server should stop accepting: every slot is taken (and the pool
        queues excess connections, ``overflow="backlog"``), or the pool is closed.

        Servers call it in the hub before each accept. Never blocks.
        """
        if self._reject:
            return self._closed
        return self._closed or self._count.all_taken()

    def free_count(self) -> int:
        """How many more tasks could start now; 1 for an unbounded pool, as gevent's
        ``Pool`` answers. gunicorn compares it with ``size`` to see whether requests
        are still in flight. Never blocks."""
        return 0 if self._closed else self._count.free()

    def __len__(self) -> int:
        """Tasks running now (including tasks handed over but not yet started)."""
        return self._count.busy

    def __bool__(self) -> bool:
        # Always true, unlike an empty gevent Group: server.stop() does `if pool:`
        # before join/kill, and a pool object is never "nothing".
        return True

    def wait_available(self, timeout: float | None = None) -> int:
        """Wait until a slot is free or *timeout* seconds pass; return ``free_count()``.

        Blocks the calling greenlet; do not call it in the hub.
        """
        timeout = check_timeout("timeout", timeout)
        if self._closed:
            raise PoolClosed("wait_available() called on a closed WorkerPool")
        if not self._has_free_slot():
            waiter: Waiter = Waiter()
            self._signal.rawlink(waiter.switch)
            try:
                with Timeout(timeout, False):
                    waiter.get()
            finally:
                self._signal.unlink(waiter.switch)
            if self._closed:
                raise PoolClosed("the WorkerPool was closed while wait_available() waited")
        return self.free_count()

    # -- submitting tasks -------------------------------------------------------------

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` on a worker.

        The task goes to the most recently released idle worker, or to a new worker
        while fewer than ``size`` exist. Called in the hub (as servers call it), this
        switches straight into that worker and never blocks; called from a greenlet it
        only schedules the task and does not switch.

        When the pool is full, a greenlet waits here for a slot, as with
        ``gevent.pool.Pool.spawn``. In the hub, or inside one of this pool's own tasks,
        waiting could hang the loop or deadlock, so :class:`~gpool.PoolFull` is raised
        instead. With ``overflow="reject"`` nothing waits: a server's connection is
        turned away (see the class docs) and any other task raises ``PoolFull``.
        Returns None: use :meth:`submit` for the result.
        """
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r} ({type(func).__name__})")
        ready = self._ready
        if ready and not self._closed and getcurrent() is self._hub:
            # The path servers take (in the hub, an idle worker ready), inlined from
            # _place() and _claim(): 1,000 of 23,500 instructions a task in-process
            # dispatch (callgrind, Python 3.11).
            worker = ready.pop()
            self._count.busy += 1
            worker.task_no += 1
            worker.busy = True
            worker.channel.put((func, args, kwargs, None))
            return
        self._place((func, args, kwargs, None))

    def try_spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Like :meth:`spawn`, but return False at once instead of waiting when full.

        Never blocks; safe in the hub and inside the pool's own tasks.
        """
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r} ({type(func).__name__})")
        if self._closed:
            raise PoolClosed("try_spawn() called on a closed WorkerPool")
        if not self._has_free_slot():
            return False
        self._place((func, args, kwargs, None))
        return True

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> AsyncResult:
        """Like :meth:`spawn`, returning a ``gevent.event.AsyncResult`` for the outcome.

        A task's exception is stored in the result (and counted as a failure), not
        reported to the hub: whoever holds the result is expected to look at it.
        """
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r} ({type(func).__name__})")
        if self._closed:
            raise PoolClosed("submit() called on a closed WorkerPool")
        result: AsyncResult = AsyncResult()
        self._place((func, args, kwargs, result))
        return result

    def _place(self, task: Task) -> None:
        """Give *task* to the hottest idle worker, a new worker, or wait for a slot."""
        ready = self._ready
        while True:
            if self._closed:
                raise PoolClosed("spawn() called on a closed WorkerPool")
            if ready:
                # The path servers take: an idle worker stands for a free slot.
                worker = ready.pop()
                self._claim(worker)
                hub = self._hub
                if getcurrent() is hub:
                    # Channel.put switches straight into the parked worker.
                    worker.channel.put(task)
                else:
                    # Anywhere else put() would block the caller until the hub ran.
                    hub.loop.run_callback(worker.channel.put, task)
                return
            if not self._count.all_taken():
                self._start_worker(task)
                return
            if self._reject:
                self._turn_away(task[0], task[1])
                return
            self._wait_for_slot()

    # -- gevent.pool.Pool's helpers ----------------------------------------------------

    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] | None = None, kwds: dict[str, Any] | None = None
    ) -> Any:
        """Run ``func(*args, **kwds)`` on a worker and return its result, or raise its
        exception, as ``gevent.pool.Pool.apply`` does. Waits for a free slot first,
        whatever *overflow* is. Called from one of this pool's own tasks while every
        slot is taken, it raises :class:`~gpool.PoolFull`, as :meth:`spawn` does."""
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r} ({type(func).__name__})")
        return mapping.apply(self, func, tuple(args or ()), dict(kwds or {}))

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any]) -> list[Any]:
        """``[func(item) for item in iterable]``, each call a task on the pool, in input
        order; the first (in that order) exception a task raised is raised here.
        See :meth:`imap`."""
        return list(self._map_results("map", func, (iterable,), ordered=True, maxsize=None))

    def imap(self, func: Callable[..., Any], *iterables: Iterable[Any], maxsize: int | None = None) -> MapResults:
        """An iterator over ``func(*items)`` for the items of *iterables* taken
        together, as the builtin ``map`` does; each call is a task on the pool, and the
        results come in input order.

        As with ``gevent.pool.Pool.imap``: the items are submitted by a greenlet of
        their own, which waits for free slots (whatever *overflow* is); a task's
        exception is raised by the ``next()`` that reaches it, and iterating may go on
        after it. With *maxsize*, at most that many items are submitted and not yet
        taken by the caller (``None`` or 0: no bound). ``close()`` on the iterator stops
        submitting. Called from one of this pool's own tasks while every slot is taken,
        it raises :class:`~gpool.PoolFull`, as :meth:`spawn` does.
        """
        return self._map_results("imap", func, iterables, ordered=True, maxsize=maxsize)

    def imap_unordered(
        self, func: Callable[..., Any], *iterables: Iterable[Any], maxsize: int | None = None
    ) -> MapResults:
        """:meth:`imap`, with each result as soon as its task ends."""
        return self._map_results("imap_unordered", func, iterables, ordered=False, maxsize=maxsize)

    def _map_results(
        self,
        method: str,
        func: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        *,
        ordered: bool,
        maxsize: object,
    ) -> MapResults:
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r} ({type(func).__name__})")
        if not iterables:
            raise TypeError(f"{method}() needs at least one iterable")
        bound = mapping.check_maxsize(maxsize)
        if self._closed:
            raise PoolClosed(f"{method}() called on a closed WorkerPool")
        mapping.refuse_to_wait_in_own_task(self, method)
        return MapResults(self, func, zip(*iterables), ordered=ordered, maxsize=bound)

    # -- resizing ----------------------------------------------------------------------

    def resize(self, size: int | None) -> None:
        """Change :attr:`size`, the most tasks running at once, while the pool runs.

        Growing lets greenlets waiting in :meth:`spawn` (or :meth:`wait_available`) and
        servers paused on a full pool go on at once. Shrinking interrupts no task:
        ``full()`` and ``free_count()`` follow the new size at once, idle workers beyond
        the free slots retire now (coldest first), and while more tasks run than the
        new size allows, a worker ending its task retires instead of parking. ``None``
        lifts the limit. A *max_detached* not given to the constructor follows the
        size. *min_idle* is kept: a pool resized below it keeps at most ``size`` idle
        workers, and *min_idle* again once it grows back. Never blocks.
        """
        size = check_pool_option("size", size)
        if self._closed:
            raise PoolClosed("resize() called on a closed WorkerPool")
        count = self._count
        count.size = size
        if self._detach_follows_size:
            count.max_detached = size
        if size is None:
            count.over_size = False
        else:
            # Every idle worker stands for a free slot (spawn() trusts it): those
            # beyond the free slots go, coldest first. Decide, then act (each put can
            # switch into a worker, which exits).
            ready = self._ready
            surplus = [ready.popleft() for _ in range(len(ready) - count.free())]
            count.over_size = count.busy > size
            self._retired += len(surplus)
            for worker in surplus:
                self._send(worker, None)
        if self._signal.waiting:
            self._signal.notify()

    # -- waiting and stopping ---------------------------------------------------------

    def join(self, timeout: float | None = None, raise_error: bool = False) -> bool:
        """Wait until no task is running; True if that happened within *timeout*.

        With *raise_error*, the first exception raised by a task that fails while
        this call waits is re-raised here. The pool stays usable. Blocks the calling
        greenlet; do not call it in the hub. After :meth:`close`, idle workers have
        exited when it returns.
        """
        timeout = check_timeout("timeout", timeout)
        check_bool("raise_error", raise_error)
        count = self._count
        if self._closed and len(self._workers) > count.busy + count.detached and getcurrent() is not self._hub:
            # close() from a greenlet hands each idle worker its stop through a hub
            # callback. Those callbacks are queued ahead of us: yielding once lets
            # them run, so no idle worker outlives `close(); join()`.
            sleep(0)
        if count.busy == 0:
            return True
        done = Event()
        failures: list[BaseException] = []

        def watch(_worker: Worker, _task_no: int, exc: BaseException | None) -> None:
            if exc is not None and raise_error:
                failures.append(exc)
                done.set()
            elif count.busy == 0:
                done.set()

        self._watchers.append(watch)
        try:
            finished = done.wait(timeout)
        finally:
            self._watchers.remove(watch)
        if failures:
            raise failures[0]
        return bool(finished) and count.busy == 0

    def kill(
        self,
        exception: type[BaseException] | BaseException = GreenletExit,
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Raise *exception* in every task running now.

        Only the tasks running when ``kill`` is called are reached: a task that ends
        first, and any later task on the same worker, is left alone. The tasks'
        ``finally`` blocks run, so the sockets a server hands them get closed. With
        *block*, wait up to *timeout* seconds for those tasks to end. The pool stays
        usable afterwards.
        """
        exception = check_exception("exception", exception)
        check_bool("block", block)
        timeout = check_timeout("timeout", timeout)
        targets = [(worker, worker.task_no) for worker in self._workers if worker.busy]
        if not targets:
            return
        hub = self._get_hub()
        if block and getcurrent() is hub:
            raise BlockingSwitchOutError(
                "kill(block=True) cannot wait in the hub: call it from a greenlet, or pass block=False"
            )
        # Deliver from the hub, after every task handed over before this call has
        # started (callbacks run in order), so each target is suspended inside its task.
        hub.loop.run_callback(_throw_into, targets, exception)
        if not block:
            return
        pending = {(id(worker), task_no) for worker, task_no in targets}
        done = Event()

        def watch(worker: Worker, task_no: int, _exc: BaseException | None) -> None:
            pending.discard((id(worker), task_no))
            if not pending:
                done.set()

        self._watchers.append(watch)
        try:
            done.wait(timeout)
        finally:
            self._watchers.remove(watch)

    def detach(self) -> None:
        """Give the running task's slot back to the pool; the task runs on.

        For tasks that turn into long-lived streams (a WebSocket, server-sent events, a
        hijacked connection): they would otherwise hold a slot for their whole life and
        starve new clients. Call it from inside a task run by this pool; calling it
        again is harmless. Detached tasks count in ``stats().detached``, not in
        ``len(pool)``, so :meth:`join` (and a graceful drain) does not wait for them,
        but :meth:`kill` still reaches them. At most *max_detached* tasks may be
        detached at once; past that :class:`~gpool.PoolFull` is raised and the task
        keeps its slot. See also :func:`gpool.detach`, which finds the pool itself.
        """
        worker = getcurrent()
        if not isinstance(worker, Worker) or worker.owner is not self or not worker.busy:
            raise RuntimeError("detach() must be called from inside a task running on this WorkerPool")
        if worker.detached:
            return
        if not self._count.can_detach():
            raise PoolFull(
                f"detach() refused: max_detached={self._count.max_detached} tasks are already detached; "
                "this task keeps its slot"
            )
        worker.detached = True
        self._count.detach()
        self._tasks_detached += 1
        if self._signal.waiting:
            self._signal.notify()

    def close(self) -> None:
        """Stop taking tasks, for good. Idle workers exit now, busy ones after their task.

        Never blocks; :meth:`join` waits for the running tasks.
        """
        if self._closed:
            return
        self._closed = True
        if self._cull_timer is not None:
            self._cull_timer.close()
            self._cull_timer = None
        for worker in self._ready.pop_all():
            self._retired += 1
            self._send(worker, None)
        if self._watchdog is not None and not self._count.busy and not self._count.detached:
            self._watchdog.stop()
        if self._hub is not None:
            # Wake greenlets waiting for a slot so they see PoolClosed.
            self._signal.wake_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def stats(self) -> PoolStats:
        """The pool's counters and gauges now."""
        count = self._count
        return PoolStats(
            size=count.size,
            workers=len(self._workers),
            idle=len(self._ready),
            busy=count.busy,
            peak_workers=self._peak_workers,
            workers_started=self._workers_started,
            # Every task handed over is running (busy or detached) or has ended one of
            # three ways: a counter fewer to keep on the hot path.
            tasks_started=count.busy + count.detached + self._tasks_completed + self._tasks_failed + self._tasks_killed,
            tasks_completed=self._tasks_completed,
            tasks_failed=self._tasks_failed,
            tasks_killed=self._tasks_killed,
            culled=self._culled,
            retired=self._retired,
            rejected=self._rejected,
            detached=count.detached,
            tasks_detached=self._tasks_detached,
            tasks_overdue=0 if self._watchdog is None else self._watchdog.overdue,
            tasks_timed_out=0 if self._watchdog is None else self._watchdog.timed_out,
        )

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        self.join()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<WorkerPool {state} size={self._count.size} busy={self._count.busy} "
            f"idle={len(self._ready)} workers={len(self._workers)} overflow={self._overflow!r}>"
        )

    # -- internals ----------------------------------------------------------------------

    def _get_hub(self) -> Any:
        hub = self._hub
        if hub is None:
            hub = self._hub = get_hub()
        return hub

    def _set_clock(self, clock: Callable[[], float]) -> None:
        """Tests: read idle and task times from *clock* (see _clock)."""
        self._clock = clock
        if self._watchdog is not None:
            self._watchdog.clock = clock

    def _has_free_slot(self) -> bool:
        return not self._closed and not self._count.all_taken()

    def _turn_away(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        answer = answer_for(func, args)
        if answer is None:
            raise PoolFull(
                f"spawn() found all {self._count.size} slots busy and this pool was built with "
                "overflow='reject'; only a server's connections are answered for it: "
                "use try_spawn() to test for a free slot"
            )
        self._rejected += 1
        self._overload_log.note(self._count.size)
        answer(self._on_reject, self._get_hub())

    def _send(self, worker: Worker, item: Task | None) -> None:
        """Put *item* on a parked worker's channel (switching into it in the hub, as
        :meth:`_place` does; deferred to the hub anywhere else)."""
        hub = self._get_hub()
        if getcurrent() is hub:
            worker.channel.put(item)
        else:
            hub.loop.run_callback(worker.channel.put, item)

    def _claim(self, worker: Worker) -> None:
        # Count the slot as taken before any switch, so full() is right at once.
        self._count.busy += 1
        worker.task_no += 1
        worker.busy = True

    def _start_worker(self, task: Task) -> None:
        hub = self._get_hub()
        if self._watchdog is not None:
            self._watchdog.start(hub, self._workers)  # no-op while it runs
        worker = Worker(work, hub, self)
        self._workers.add(worker)
        self._workers_started += 1
        if len(self._workers) > self._peak_workers:
            self._peak_workers = len(self._workers)
        self._claim(worker)
        worker.first_task = task
        if getcurrent() is hub:
            worker.switch()
        else:
            hub.loop.run_callback(worker.switch)

    def _wait_for_slot(self) -> None:
        current = getcurrent()
        if current is self._get_hub():
            raise PoolFull(
                f"spawn() called in the hub while all {self._count.size} slots are busy; "
                "the hub cannot wait: use try_spawn() or check full() first"
            )
        if current in self._workers:
            raise PoolFull(
                f"spawn() called from one of the pool's own tasks while all {self._count.size} slots are busy; "
                "waiting could deadlock: use try_spawn() or a larger size"
            )
        waiter: Waiter = Waiter()
        self._signal.rawlink(waiter.switch)
        try:
            waiter.get()
        finally:
            self._signal.unlink(waiter.switch)

    def _settle(self, worker: Worker, outcome: str, error: BaseException | None) -> bool:
        """Account for the task *worker* just ended, then park the worker on the ready
        list; False if it is to retire instead. Runs in the worker; never switches."""
        if outcome is COMPLETED:  # never after a kill (outcome_of), so kill_exc is None
            self._tasks_completed += 1
            failure = None
        else:
            failure = self._count_other_end(worker, outcome, error)
        count = self._count
        ready = self._ready
        # The slot comes back here rather than in a SlotCount method: 480 of 23,000
        # instructions a task (callgrind).
        crowded = False
        if worker.detached:
            worker.detached = False
            count.detached -= 1
            # Parking could leave more idle workers than free slots (others took the
            # slots this task gave back).
            crowded = count.idle_would_exceed_free(len(ready))
        else:
            count.busy -= 1
            if count.over_size:
                # resize() shrank the pool below the tasks running: park only where a
                # slot is free, and stop checking once one is.
                crowded = count.over_size = count.idle_would_exceed_free(len(ready))
        if self._watchers:
            for watch in list(self._watchers):
                watch(worker, worker.task_no, failure)
        if failure is not None:
            self._report(worker, failure, fatal=outcome is FATAL)
        if self._signal.waiting:
            self._signal.notify()

        # Exit rules, any one of which retires the worker:
        # - the pool is closed;
        # - the task raised a system error (SystemExit, KeyboardInterrupt), or the
        #   watchdog killed it (doomed): this greenlet's state is not to be trusted;
        # - parking would leave more idle workers than free slots: the task ran
        #   detached, or resize() shrank the pool;
        # - it reached the recycle limit, max_tasks_per_worker.
        if (
            self._closed
            or outcome is FATAL
            or worker.doomed
            or crowded
            or (self._max_tasks is not None and worker.task_no >= self._max_tasks)
        ):
            self._retired += 1
            return False

        if worker.channel is None:
            # Made when the worker first parks: a Channel (two deques) is 1,600 bytes,
            # 14% of a held connection's RSS, and a worker busy on its first task needs none.
            worker.channel = Channel()
        # Onto the hot end of the ready list, stamped with the release time (the
        # invariant ReadyStack keeps), written out here rather than as a method: 430
        # of 23,000 instructions a task in-process dispatch (callgrind, Python 3.11).
        clock = self._clock  # not self._clock(), a generic method lookup on a slot: 80 instructions
        worker.idle_since = clock()
        ready.append(worker)
        if self._cull_timer is None and len(ready) > self._min_idle:
            self._arm_culler()
        return True

    def _count_other_end(self, worker: Worker, outcome: str, error: BaseException | None) -> BaseException | None:
        """Count a task that did not simply complete; the failure to report, if any."""
        worker.kill_exc = None
        if outcome is KILLED:
            self._tasks_killed += 1
            return None
        self._tasks_failed += 1
        return error if outcome is FAILED or outcome is FATAL else None

    def _report(self, worker: Worker, failure: BaseException, fatal: bool) -> None:
        if fatal:
            # gevent re-raises a system error in the main greenlet, switching there
            # directly from the reporting greenlet. From the hub's next callback, not
            # from here: this worker may have been switched into from inside a
            # server's accept callback, which must not be left suspended while the
            # main greenlet (say) stops that server.
            self._hub.loop.run_callback(report, self._hub, worker, failure, self._log_all_errors)
        else:
            report(self._hub, worker, failure, self._log_all_errors)

    def _retire(self, worker: Worker) -> None:
        """The last thing a worker does: leave the pool."""
        self._workers.discard(worker)
        if self._closed and not self._workers and self._watchdog is not None:
            self._watchdog.stop()

    def _arm_culler(self) -> None:
        delay = max(self._ready.oldest_release() + self._max_idle - self._clock(), 0.0)
        # ref=False: a pending cull must not keep gevent.wait() or the loop alive.
        timer = self._get_hub().loop.timer(delay, ref=False)
        self._cull_timer = timer
        # Through a weak reference: a pending cull must not keep a dropped pool alive.
        timer.start(_cull_pool, weakref.ref(self))

    def _cull(self) -> None:
        """Timer callback, in the hub: retire workers idle longer than max_idle."""
        if self._cull_timer is not None:
            self._cull_timer.close()
            self._cull_timer = None
        stale = self._ready.pop_stale(self._clock() - self._max_idle + _CULL_SLACK, self._min_idle)
        # Decide first, then act: each put below switches into a worker, which exits.
        self._culled += len(stale)
        for worker in stale:
            worker.channel.put(None)
        if stale:
            _log.debug("culled %d idle workers; %d left", len(stale), len(self._workers))
        if not self._closed and len(self._ready) > self._min_idle:
            self._arm_culler()


def _throw_into(targets: Iterable[tuple[Worker, int]], exception: type[BaseException] | BaseException) -> None:
    """Hub callback of kill(): raise *exception* in each target still on its task."""
    for worker, task_no in targets:
        if worker.busy and worker.task_no == task_no:
            worker.throw_into_task(exception() if isinstance(exception, type) else exception)


def _cull_pool(pool_ref: weakref.ReferenceType[WorkerPool]) -> None:
    pool = pool_ref()
    if pool is not None:
        pool._cull()


def _dismiss_idle(ready: ReadyStack[Worker]) -> None:
    """Finalizer of a dropped pool: its idle workers exit (busy ones after their task)."""
    workers = ready.pop_all()
    if workers:
        get_hub().loop.run_callback(_stop_all, workers)


def _stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.channel.put(None)


def detach() -> None:
    """Give the calling task's slot back to its pool: :meth:`WorkerPool.detach`,
    for code that does not hold the pool (a WebSocket handler, an SSE view)."""
    worker = getcurrent()
    pool = worker.owner if isinstance(worker, Worker) else None
    if pool is None:
        raise RuntimeError("gpool.detach() must be called from inside a task running on a WorkerPool")
    pool.detach()


def current_pool() -> WorkerPool | None:
    """The WorkerPool running the calling task, or None outside one."""
    worker = getcurrent()
    if isinstance(worker, Worker):
        pool: WorkerPool | None = worker.owner
        return pool
    return None
