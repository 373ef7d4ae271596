"""Model-based test of the WorkerPool API, driven by hypothesis.

A ``RuleBasedStateMachine`` makes random sequences of ``spawn``, ``try_spawn``,
``submit`` (from the main greenlet, from the hub and from inside running tasks),
``detach``, ``kill``, ``join``, ``wait_available``, ``resize``, ``close`` and culling, on pools of
random ``size``, ``min_idle``, ``max_idle``, ``max_tasks_per_worker``, ``max_detached``
and ``isolate``. Tasks finish, raise, exit with ``GreenletExit``, block until the
model tells them what to do, or get killed.

The model predicts, and checks after every step, the exact ``PoolStats`` counters and
gauges, which worker runs each task (the most recently released idle one, or a new
one only when none is idle), what each task sees of the previous task's
``contextvars`` and ``gevent.local`` values, how every task ends, which failures reach
the hub's ``handle_error`` (each exactly once, from the right worker) and which
workers are alive.

The one thing the model cannot decide for itself is the order in which the hub runs
things (which of several killed tasks ends first, when a culling timer fires). Tasks
therefore append what they do to an event log the moment they do it, and the model
replays that log in order: the hub picks the interleaving, the model checks that the
pool's bookkeeping matches it.
"""

from __future__ import annotations

import contextvars
import gc
import sys
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.local
import pytest
from gevent import GreenletExit
from gevent.event import AsyncResult, Event
from gevent.queue import Queue
from greenlet import getcurrent
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import gpool
from gpool import PoolClosed, PoolError, PoolFull, WorkerPool
from gpool._core.worker import Worker

from ..helpers import scaled, wait_until

# Bound on every wait for something the model knows must happen. Far above what any
# step takes (microseconds), so reaching it means the pool hung or lost a task.
WAIT = 5.0

# A timeout the model knows must expire (join or wait_available on a pool that stays
# full): short, because nothing can change meanwhile.
EXPIRE = 0.002

# How a task the model releases ends.
ENDS = ("return", "raise", "exit")

SPAWN_METHODS = ("spawn", "try_spawn", "submit")

# Set by every task to its own id: the next task on the same worker must not see it
# when the pool isolates tasks, and must see it when it does not.
_LAST_TASK: contextvars.ContextVar[int | None] = contextvars.ContextVar("last_task", default=None)

# Every pool the model makes: once all examples ran, none may have a worker left alive.
POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


class TaskFailure(Exception):
    """What a task told to raise raises (one instance per task, so it can be traced)."""


class Stop(BaseException):
    """A kill exception that is neither GreenletExit nor an ordinary Exception."""


class StopError(Exception):
    """A kill exception that is an ordinary Exception."""


# kill(exception=...) choices: the argument (None: the default), and the class every
# killed task must end with. "stop-instance" passes one Stop instance, made per call
# (a raised instance keeps its traceback), which every killed task must end with.
KILLS: dict[str, tuple[object, type[BaseException]]] = {
    "default": (None, GreenletExit),
    "exit-class": (GreenletExit, GreenletExit),
    "stop-class": (Stop, Stop),
    "stop-instance": (None, Stop),
    "error-class": (StopError, StopError),
}


@dataclass(eq=False)
class Task:
    """One task: what the model expects of it, and what it recorded while it ran."""

    tid: int
    method: str  # spawn, try_spawn or submit
    blocking: bool  # waits for orders from the model instead of ending at once
    expect: tuple[Any, ...]  # ("return",), ("raise",), ("exit",) or ("kill", class, instance)
    failure: TaskFailure
    orders: Queue = field(default_factory=Queue)
    started: Event = field(default_factory=Event)
    done: Event = field(default_factory=Event)
    ack: Event = field(default_factory=Event)
    accepted: bool = False  # the pool took it (set by whoever offered it)
    result: AsyncResult | None = None
    detached: bool = False  # the model's view, updated as the log is replayed
    # Recorded by the task itself:
    runs: int = 0
    worker: Worker | None = None
    args_ok: bool = False
    saw: tuple[int | None, int | None] = (None, None)
    outcome: BaseException | None = None
    reply: object = None

    def __repr__(self) -> str:
        return f"<task {self.tid} {self.method}{' blocking' if self.blocking else ''}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a dataclass field by field in a failing program; the short
        # form is what identifies a task there.
        printer.text(repr(self))


def _run(machine: PoolModel, task: Task, *, tag: int) -> int:
    """The body of every task: record what it sees, obey the model, log its end."""
    task.runs += 1
    task.worker = getcurrent()
    # A task handed another task's arguments would be a lost task and a duplicate.
    task.args_ok = tag == task.tid
    task.saw = (_LAST_TASK.get(), getattr(machine.local, "tid", None))
    _LAST_TASK.set(task.tid)
    machine.local.tid = task.tid
    task.started.set()
    try:
        end = task.expect[0]
        while task.blocking:
            order = task.orders.get()
            if order[0] == "end":
                end = order[1]
                break
            task.reply = machine.perform(task, order)
            task.ack.set()
        if end == "raise":
            raise task.failure
        if end == "exit":
            raise GreenletExit
        return task.tid
    except BaseException as exc:
        task.outcome = exc
        raise
    finally:
        # The worker does its accounting right after this, without switching, so the
        # log's order is the order the pool saw the ends in.
        machine.log.append(("end", task))
        task.done.set()


@contextmanager
def bounded(what: str, seconds: float = WAIT) -> Iterator[None]:
    """Fail, instead of hanging, if the block does not finish in time."""
    with gevent.Timeout(seconds, AssertionError(f"{what}: not done within {seconds}s")):
        yield


def wait_for(flag: Event, what: str) -> None:
    if not flag.wait(WAIT):
        raise AssertionError(f"{what}: not within {WAIT}s")


class PoolModel(RuleBasedStateMachine):
    """One pool per example; the model's state mirrors what the pool should hold."""

    def __init__(self) -> None:
        super().__init__()
        self.pool: WorkerPool | None = None
        self.local = gevent.local.local()
        self.log: list[tuple[Any, ...]] = []
        self.cursor = 0  # how much of the log the model has replayed
        self.tasks: list[Task] = []
        self.reports: list[tuple[object, type, BaseException]] = []
        self.expected_reports: list[tuple[object, type, BaseException]] = []
        # The model's pool: idle workers oldest first, running tasks in claim order.
        self.ready: list[Worker] = []
        self.running: list[Task] = []
        self.seen_workers: set[Worker] = set()
        self.retired_workers: list[Worker] = []
        self.tasks_run_by: Counter[Worker] = Counter()
        self.last_task_on: dict[Worker, Task] = {}
        self.busy = 0
        self.detached = 0
        self.closed = False
        # After a resize below the running tasks: until their ends bring busy back
        # within the size, busy may exceed it.
        self.over_size = False
        self.counts: Counter[str] = Counter()
        self.peak = 0
        self.peak_seen = 0

    # -- set-up and tear-down ------------------------------------------------------------

    @initialize(
        size=st.sampled_from((1, 2, 2, 3, 4, None)),
        max_tasks=st.one_of(st.none(), st.integers(1, 3)),
        isolate=st.booleans(),
        cull=st.sampled_from((False, False, True)),
        data=st.data(),
    )
    def make_pool(
        self, size: int | None, max_tasks: int | None, isolate: bool, cull: bool, data: st.DataObject
    ) -> None:
        self.size = size
        self.max_tasks = max_tasks
        self.isolate = isolate
        # With culling on, timers retire idle workers whenever the model waits; the
        # model then accepts any culling that took the oldest first. With it off,
        # max_idle is never reached and no idle worker may die.
        self.cull = cull
        self.max_idle = data.draw(st.sampled_from([0.002, 0.02]), label="max_idle") if cull else 3600.0
        self.min_idle = data.draw(st.integers(0, size if size is not None else 2), label="min_idle")
        if cull:
            # Whether a detached task's worker parks depends on how many idle workers
            # there are when it ends, which a culling timer could have just changed.
            self.max_detached: int | None = 0
        else:
            self.max_detached = data.draw(st.sampled_from((None, 1, 2, 0)), label="max_detached")
        self.detach_limit = self.max_detached if self.max_detached is not None else size
        hub = gevent.get_hub()
        hub.handle_error = lambda context, kind, value, tb: self.reports.append((context, kind, value))
        self.pool = WorkerPool(
            size,
            max_idle=self.max_idle,
            min_idle=self.min_idle,
            max_tasks_per_worker=max_tasks,
            isolate=isolate,
            max_detached=self.max_detached,
        )
        POOLS.add(self.pool)

    def teardown(self) -> None:
        if self.pool is None:
            return
        # Teardown also runs after a failed step: then only clean up, so the step's
        # own error is the one reported.
        failing = sys.exc_info()[1] is not None
        try:
            if not failing:
                self._wind_down()
                self._final_checks()
        finally:
            self._force_down()
            try:
                del gevent.get_hub().handle_error
            except AttributeError:
                pass

    def _force_down(self) -> None:
        """End whatever a failure left running (nothing, after a clean wind-down)."""
        assert self.pool is not None
        try:
            self.pool.close()
            with bounded("kill() at teardown"):
                self.pool.kill(block=True, timeout=1.0)
        except Exception:
            pass  # a broken pool: the failure being reported matters, not this

    def _wind_down(self) -> None:
        assert self.pool is not None
        for task in self.running:
            task.expect = ("return",)
            task.orders.put(("end", "return"))
        self.pool.close()
        self.log.append(("close",))
        with bounded("join() after releasing every task"):
            self.pool.join()
        for task in self.running:
            wait_for(task.done, f"{task} ending at teardown")

    def _final_checks(self) -> None:
        assert self.pool is not None
        self._absorb()
        wait_until(lambda: all(w.dead for w in self.retired_workers), WAIT, "every worker exiting after close()")
        self.stats_match_the_model()
        stats = self.pool.stats()
        assert (stats.workers, stats.busy, stats.idle, stats.detached) == (0, 0, 0, 0), stats
        for task in self.tasks:
            # No task lost, none run twice: every accepted task ran once and ended.
            assert task.runs == (1 if task.accepted else 0), f"{task} ran {task.runs} times"
            assert task.done.is_set() == task.accepted, f"{task} accepted={task.accepted}, ended={task.done.is_set()}"
        assert all(w.dead for w in self.seen_workers), "a worker is alive after close() and join()"

    # -- helpers ---------------------------------------------------------------------------

    def _new_task(self, data: st.DataObject, method: str, blocking: bool | None = None) -> Task:
        if blocking is None:
            blocking = data.draw(st.booleans(), label="blocking")
        end = "return" if blocking else data.draw(st.sampled_from(ENDS), label="ends with")
        tid = len(self.tasks)
        task = Task(tid, method, blocking, (end,), TaskFailure(f"task {tid}"))
        self.tasks.append(task)
        return task

    def _pick(self, data: st.DataObject, tasks: list[Task], label: str) -> Task:
        return data.draw(st.sampled_from(sorted(tasks, key=lambda t: t.tid)), label=label)

    def _full(self) -> bool:
        return self.closed or (self.size is not None and self.busy >= self.size)

    def _free(self) -> int:
        if self.closed:
            return 0
        if self.size is None:
            return 4  # unbounded: any small batch fits
        return self.size - self.busy

    def _may_detach(self) -> bool:
        return self.detach_limit is None or self.detached < self.detach_limit

    def offer(self, task: Task, method: str, *, log_first: bool) -> object:
        """Offer *task* to the pool with *method*; return its reply or the PoolError.

        The claim goes in the log where the pool makes it. In the hub or inside a
        task, spawn never waits, and in the hub it runs the task before returning, so
        the claim is logged first. In the main greenlet spawn may wait for a slot
        while other tasks end, so the claim is logged once it returns.
        """
        assert self.pool is not None
        if log_first:
            self.log.append(("claim", task))
        try:
            reply = getattr(self.pool, method)(_run, self, task, tag=task.tid)
        except PoolError as exc:
            return exc
        task.accepted = reply is not False
        if method == "submit":
            task.result = reply
        if task.accepted and not log_first:
            self.log.append(("claim", task))
        return reply

    def perform(self, task: Task, order: tuple[Any, ...]) -> object:
        """Carry out *order* inside *task* (called by the task itself)."""
        assert self.pool is not None
        if order[0] == "detach":
            try:
                if order[1] == "module":
                    gpool.detach()
                else:
                    self.pool.detach()
                reply: object = None
            except PoolFull as exc:
                reply = exc
            self.log.append(("detach", task, reply))
            return reply
        _, child, method = order
        return self.offer(child, method, log_first=True)

    def _order(self, task: Task, order: tuple[Any, ...]) -> object:
        task.ack.clear()
        task.orders.put(order)
        wait_for(task.ack, f"{task} carrying out {order[0]}")
        return task.reply

    def _end(self, task: Task, end: str) -> None:
        task.expect = (end,)
        task.orders.put(("end", end))

    def _settle(self, tasks: list[Task]) -> None:
        """Wait until each accepted task has started, and the quick ones have ended."""
        for task in tasks:
            if task.accepted:
                wait_for(task.started, f"{task} starting")
                if not task.blocking:
                    wait_for(task.done, f"{task} ending")

    def _check_reply(self, task: Task, method: str, reply: object, *, full: bool, no_wait: bool = False) -> None:
        """The reply to offering *task*, given what the model knows of the pool."""
        if self.closed:
            assert isinstance(reply, PoolClosed), f"{method} on a closed pool gave {reply!r}"
        elif full and method == "try_spawn":
            assert reply is False, f"try_spawn on a full pool gave {reply!r}"
        elif full:
            # Only asked where waiting is not allowed: the hub, or a pool task.
            assert no_wait and isinstance(reply, PoolFull), f"{method} on a full pool gave {reply!r}"
        else:
            expected = {"spawn": None, "try_spawn": True}.get(method)
            if method == "submit":
                assert isinstance(reply, AsyncResult), reply
            else:
                assert reply is expected, f"{method} with a free slot gave {reply!r}"
            assert task.accepted

    # -- replaying the log -------------------------------------------------------------------

    def _absorb(self) -> None:
        """Replay what happened since the last call, checking each step."""
        while self.cursor < len(self.log):
            entry = self.log[self.cursor]
            self.cursor += 1
            if entry[0] == "claim":
                if entry[1].accepted:
                    self._claimed(entry[1])
            elif entry[0] == "end":
                self._ended(entry[1])
            elif entry[0] == "detach":
                self._detached(entry[1], entry[2])
            else:
                self._closed_now()
        self._culled()

    def _claimed(self, task: Task) -> None:
        assert task.runs == 1, f"{task} ran {task.runs} times"
        assert task.args_ok, f"{task} was called with another task's arguments"
        assert self.size is None or self.busy < self.size, f"{task} was handed over while every slot was taken"
        worker = task.worker
        assert worker is not None
        if self.ready and worker is self.ready[-1]:
            self.ready.pop()
        else:
            assert worker not in self.seen_workers, (
                f"{task} ran on {worker}, not on the most recently released idle worker {self.ready[-1:]}"
            )
            if self.ready:
                # Only if a culling timer retired every idle worker before the claim.
                assert self.cull and self.min_idle == 0 and all(w.dead for w in self.ready), (
                    f"{task} got a new worker while {self.ready} were idle"
                )
                self.counts["culled"] += len(self.ready)
                self.ready.clear()
            self.seen_workers.add(worker)
            self.counts["workers_started"] += 1
            self.peak = max(self.peak, len(self.ready) + len(self.running) + 1)
        previous = self.last_task_on.get(worker)
        expected = (None, None) if self.isolate or previous is None else (previous.tid, previous.tid)
        assert task.saw == expected, f"{task} saw context/local {task.saw} on {worker}, expected {expected}"
        self.last_task_on[worker] = task
        self.busy += 1
        self.counts["tasks_started"] += 1
        self.running.append(task)

    def _ended(self, task: Task) -> None:
        assert task in self.running, f"{task} ended but was not running"
        self.running.remove(task)
        worker = task.worker
        kind = task.expect[0]
        outcome = task.outcome
        if kind == "return":
            assert outcome is None, f"{task} should have returned, ended with {outcome!r}"
            self.counts["tasks_completed"] += 1
        elif kind == "exit":
            assert type(outcome) is GreenletExit, f"{task} should have exited, ended with {outcome!r}"
            self.counts["tasks_completed"] += 1
        elif kind == "raise":
            assert outcome is task.failure, f"{task} should have raised its failure, ended with {outcome!r}"
            self.counts["tasks_failed"] += 1
            if task.method != "submit":
                self.expected_reports.append((worker, TaskFailure, outcome))
        else:
            _, cls, instance = task.expect
            assert isinstance(outcome, cls), f"{task} should have been killed with {cls}, ended with {outcome!r}"
            assert instance is None or outcome is instance
            self.counts["tasks_killed"] += 1
        if task.result is not None:
            assert task.result.ready(), f"{task}'s AsyncResult is not set after it ended"
            if outcome is None:
                assert task.result.successful() and task.result.value == task.tid
            else:
                assert task.result.exception is outcome, f"{task}'s result holds {task.result.exception!r}"
        self.tasks_run_by[worker] += 1
        crowded = False
        if task.detached:
            self.detached -= 1
            # A detached task's worker parks only if that leaves an idle worker per
            # free slot: spawn() takes an idle worker to mean a free slot.
            crowded = self.size is not None and self.busy + len(self.ready) >= self.size
            if crowded:
                event("a detached task's worker retired: no free slot for it")
        else:
            self.busy -= 1
            # Only after a resize below the running tasks can parking leave more idle
            # workers than free slots; then the worker retires instead.
            crowded = self.size is not None and self.busy + len(self.ready) >= self.size
            if crowded:
                event("a worker retired at the end of its task: the pool was shrunk")
        if self.size is None or self.busy <= self.size:
            self.over_size = False
        spent = self.max_tasks is not None and self.tasks_run_by[worker] >= self.max_tasks
        if self.closed or crowded or spent:
            self.counts["retired"] += 1
            self.retired_workers.append(worker)  # type: ignore[arg-type]
        else:
            self.ready.append(worker)  # type: ignore[arg-type]

    def _detached(self, task: Task, reply: object) -> None:
        if task.detached:
            assert reply is None, f"a second detach() in {task} gave {reply!r}"
        elif not self._may_detach():
            assert isinstance(reply, PoolFull), f"detach() past max_detached={self.detach_limit} gave {reply!r}"
        else:
            assert reply is None, f"detach() in {task} gave {reply!r}"
            task.detached = True
            self.busy -= 1
            self.detached += 1
            self.counts["tasks_detached"] += 1

    def _closed_now(self) -> None:
        self.closed = True
        self.counts["retired"] += len(self.ready)
        self.retired_workers.extend(self.ready)
        self.ready.clear()

    def _culled(self) -> None:
        """Idle workers that died since the last replay: culled, oldest first."""
        dead = [w.dead for w in self.ready]
        count = dead.index(False) if False in dead else len(dead)
        assert not any(dead[count:]), f"an idle worker died out of turn: {list(zip(self.ready, dead))}"
        if count:
            assert self.cull, f"{count} idle worker(s) died though none idled for max_idle"
            event("idle workers culled")
            self.counts["culled"] += count
            del self.ready[:count]

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def stats_match_the_model(self) -> None:
        if self.pool is None:
            return
        pool = self.pool
        stats = pool.stats()
        expected = {
            "size": self.size,
            "workers": len(self.ready) + len(self.running),
            "idle": len(self.ready),
            "busy": self.busy,
            "detached": self.detached,
            "rejected": 0,
        }
        for name in (
            "workers_started",
            "tasks_started",
            "tasks_completed",
            "tasks_failed",
            "tasks_killed",
            "retired",
            "culled",
            "tasks_detached",
        ):
            expected[name] = self.counts[name]
        actual = {name: getattr(stats, name) for name in expected}
        assert actual == expected, f"stats {actual} != model {expected}"
        # The same facts as the stats' own identities, so they hold for any model.
        assert stats.busy + stats.idle + stats.detached == stats.workers
        assert stats.tasks_started == (
            stats.tasks_completed + stats.tasks_failed + stats.tasks_killed + stats.busy + stats.detached
        )
        if self.size is not None:
            assert stats.busy <= self.size or self.over_size
            # Every idle worker stands for a free slot.
            assert stats.idle <= max(self.size - stats.busy, 0)
        if self.cull:
            # Culls the model only learns of later make its figure an upper bound.
            assert max(self.peak_seen, stats.workers) <= stats.peak_workers <= self.peak
            self.peak_seen = stats.peak_workers
        else:
            assert stats.peak_workers == self.peak
        assert len(pool) == self.busy
        assert pool.closed == self.closed
        assert pool.full() == self._full()
        if self.closed:
            assert pool.free_count() == 0
        else:
            assert pool.free_count() == (1 if self.size is None else max(self.size - self.busy, 0))
        assert self.reports == self.expected_reports, "failures reported to the hub differ from the model's"
        for task in self.running:
            assert task.runs == 1 and not task.done.is_set(), f"{task} should be running"
        assert all(w.dead for w in self.retired_workers), "a retired worker is still alive"
        assert not any(w.dead for w in self.ready), "an idle worker is dead"

    # -- rules: handing out tasks --------------------------------------------------------------

    @precondition(lambda self: not self._full())
    @rule(data=st.data())
    def spawn_from_main(self, data: st.DataObject) -> None:
        """A batch of spawns from an ordinary greenlet, up to the free slots."""
        assert self.pool is not None
        method = data.draw(st.sampled_from(SPAWN_METHODS), label="method")
        batch = []
        for claimed in range(data.draw(st.integers(1, min(self._free(), 4)), label="batch")):
            task = self._new_task(data, method)
            with bounded(f"{method} with a free slot"):
                reply = self.offer(task, method, log_first=False)
            self._check_reply(task, method, reply, full=False)
            # From a greenlet, spawn takes the slot at once but does not switch.
            assert not task.started.is_set(), f"{method} from a greenlet switched into the task"
            assert len(self.pool) == self.busy + claimed + 1
            batch.append(task)
        self._settle(batch)
        self._absorb()

    # Full by exactly one slot: freeing one lets the waiter in (a shrunk pool may be
    # further over its size than that).
    @precondition(lambda self: not self.closed and self.size is not None and self.busy == self.size)
    @rule(data=st.data())
    def wait_for_a_slot(self, data: st.DataObject) -> None:
        """On a full pool, spawn, submit or wait_available wait until a task frees a slot."""
        assert self.pool is not None
        holder = self._pick(data, [t for t in self.running if not t.detached], "frees its slot")
        how = data.draw(st.sampled_from(("detach", "end") if self._may_detach() else ("end",)), label="by")
        if how == "end":
            how = data.draw(st.sampled_from(ENDS), label="ending")
        method = data.draw(st.sampled_from(("spawn", "submit", "wait_available")), label="method")
        # Nothing happens until this greenlet waits: the order only queues.
        if how == "detach":
            holder.ack.clear()
            holder.orders.put(("detach", "method"))
        else:
            self._end(holder, how)
        newcomer = None
        with bounded(f"{method} waiting for the slot {holder} frees"):
            if method == "wait_available":
                assert self.pool.wait_available() == 1
            else:
                newcomer = self._new_task(data, method)
                reply = self.offer(newcomer, method, log_first=False)
                assert newcomer.accepted, reply
                assert not newcomer.started.is_set()
        assert (holder.ack if how == "detach" else holder.done).is_set(), f"{method} returned before a slot was freed"
        if newcomer is not None:
            self._settle([newcomer])
        self._absorb()

    @rule(data=st.data())
    def spawn_in_hub(self, data: st.DataObject) -> None:
        """Spawn as servers do, in the hub: straight into the worker, or PoolFull."""
        method = data.draw(st.sampled_from(SPAWN_METHODS), label="method")
        task = self._new_task(data, method)
        full = self._full()
        outcome: dict[str, object] = {}
        called = Event()

        def in_hub() -> None:
            try:
                outcome["reply"] = self.offer(task, method, log_first=True)
                outcome["started"] = task.started.is_set()
            except BaseException as exc:
                outcome["reply"] = exc
            called.set()

        gevent.get_hub().loop.run_callback(in_hub)
        wait_for(called, f"{method} in the hub")
        self._check_reply(task, method, outcome["reply"], full=full, no_wait=True)
        if task.accepted:
            assert outcome["started"], f"{method} in the hub returned before the task ran"
        self._settle([task])
        self._absorb()

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def spawn_from_task(self, data: st.DataObject) -> None:
        """A running task spawns another: it may not wait, so a full pool raises PoolFull."""
        parent = self._pick(data, self.running, "parent")
        method = data.draw(st.sampled_from(SPAWN_METHODS), label="method")
        child = self._new_task(data, method)
        full = self._full()
        reply = self._order(parent, ("spawn", child, method))
        self._check_reply(child, method, reply, full=full, no_wait=True)
        self._settle([child])
        self._absorb()

    # -- rules: tasks ending ----------------------------------------------------------------------

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish_task(self, data: st.DataObject) -> None:
        task = self._pick(data, self.running, "finishes")
        self._end(task, data.draw(st.sampled_from(ENDS), label="how"))
        wait_for(task.done, f"{task} ending")
        self._absorb()

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def detach_task(self, data: st.DataObject) -> None:
        """detach() inside a task: frees its slot, or PoolFull past max_detached."""
        task = self._pick(data, self.running, "detaches")
        self._order(task, ("detach", data.draw(st.sampled_from(("module", "method")), label="via")))
        self._absorb()

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        """kill() ends exactly the tasks running when it is called, detached ones too."""
        assert self.pool is not None
        kind = data.draw(st.sampled_from(list(KILLS)), label="exception")
        argument, cls = KILLS[kind]
        shared = Stop("shared") if kind == "stop-instance" else None
        if shared is not None:
            argument = shared
        block = data.draw(st.booleans(), label="block")
        targets = list(self.running)
        for task in targets:
            task.expect = ("kill", cls, shared)
        args = () if argument is None else (argument,)
        if block:
            with bounded("kill(block=True)"):
                self.pool.kill(*args, block=True, timeout=data.draw(st.sampled_from((None, WAIT)), label="timeout"))
            ended = [task for task in targets if task.done.is_set()]
            assert ended == targets, f"kill(block=True) returned before {set(targets) - set(ended)} ended"
        else:
            self.pool.kill(*args, block=False)
            # From a greenlet the kill is delivered later, by the hub.
            assert not any(task.done.is_set() for task in targets)
            for task in targets:
                wait_for(task.done, f"{task} being killed")
        self._absorb()

    # The ending task must free a slot for the newcomer: not on a pool shrunk below
    # its running tasks.
    @precondition(
        lambda self: (
            not self.closed
            and any(not t.detached for t in self.running)
            and (self.size is None or self.busy <= self.size)
        )
    )
    @rule(data=st.data())
    def kill_racing_reuse(self, data: st.DataObject) -> None:
        """A kill aimed at a task that ends, before it lands, and whose worker the hub
        hands a new task meanwhile, must miss that new task.

        The hub runs callbacks in order: the task's wake-up (it ends and parks), a
        server-style spawn in the hub (which takes the hottest idle worker: that one),
        then the kill's delivery.
        """
        assert self.pool is not None
        task = self._pick(data, [t for t in self.running if not t.detached], "ends before the kill lands")
        end = data.draw(st.sampled_from(ENDS), label="how")
        method = data.draw(st.sampled_from(SPAWN_METHODS), label="newcomer's method")
        newcomer = self._new_task(data, method, blocking=True)
        others = [t for t in self.running if t is not task]
        for other in others:
            other.expect = ("kill", GreenletExit, None)
        called = Event()
        replies: list[object] = []

        def in_hub() -> None:
            replies.append(self.offer(newcomer, method, log_first=True))
            called.set()

        self._end(task, end)
        gevent.get_hub().loop.run_callback(in_hub)
        self.pool.kill(block=False)
        wait_for(called, f"{method} in the hub")
        assert newcomer.accepted, f"{method} in the hub, after a task freed a slot, gave {replies}"
        for waited in [task, *others]:
            wait_for(waited.done, f"{waited} ending")
        wait_for(newcomer.started, f"{newcomer} starting")
        if newcomer.worker is task.worker:
            event("kill race: the newcomer reused the worker the kill aimed at")
        self._absorb()
        assert newcomer in self.running, f"{newcomer} was hit by a kill aimed at {task}"

    # -- rules: resizing ---------------------------------------------------------------------------

    @rule(data=st.data())
    def resize(self, data: st.DataObject) -> None:
        """resize(): full() and free_count() follow at once, idle workers beyond the free
        slots retire (oldest first), nothing running is interrupted, and a spawn waiting
        on a full pool goes on when it grows."""
        assert self.pool is not None
        pool = self.pool
        choices = [1, 2, 3, 4, 6, None]
        if self.cull:
            # Whether a worker parks after a shrink below the running tasks depends on
            # how many idle workers a culling timer has just left: keep clear of that.
            choices = [n for n in choices if n is None or n >= self.busy]
        new = data.draw(st.sampled_from(choices), label="new size")
        if self.closed:
            with pytest.raises(PoolClosed):
                pool.resize(new)
            return
        waiter = None
        grows = new is None or new > self.busy
        if self._full() and grows and self.busy == self.size and data.draw(st.booleans(), label="a spawn waits"):
            task = self._new_task(data, "spawn")
            box: list[object] = []
            entered = Event()

            def wait_in_spawn() -> None:
                entered.set()
                box.append(self.offer(task, "spawn", log_first=False))

            waiter = gevent.spawn(wait_in_spawn)
            wait_for(entered, "a greenlet calling spawn on the full pool")
            assert not box, f"spawn on a full pool returned {box}"
        # No switch from here to resize(): the model's idle list is the pool's.
        self._absorb()
        pool.resize(new)
        self.size = new
        if self.max_detached is None:
            self.detach_limit = new
        self.over_size = new is not None and self.busy > new
        if new is not None:
            surplus = len(self.ready) - max(new - self.busy, 0)
            if surplus > 0:
                event("resize retired idle workers")
                retiring = self.ready[:surplus]
                del self.ready[:surplus]
                self.counts["retired"] += surplus
                self.retired_workers.extend(retiring)
        assert pool.size == new and pool.full() == self._full()
        if waiter is not None:
            with bounded("a spawn waiting on a full pool, after resize() grew it"):
                waiter.join()
            assert task.accepted and box == [None], box
            self._settle([task])
        wait_until(lambda: all(w.dead for w in self.retired_workers), WAIT, "idle workers retiring after resize()")
        self._absorb()

    # -- rules: waiting and closing -------------------------------------------------------------

    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        """join() waits for attached tasks only; raise_error re-raises the first failure."""
        assert self.pool is not None
        attached = [t for t in self.running if not t.detached]
        if not attached:
            assert self.pool.join(timeout=WAIT) is True
            return
        if data.draw(st.booleans(), label="let join time out"):
            assert self.pool.join(timeout=EXPIRE) is False
            self._absorb()
            return
        raise_error = data.draw(st.booleans(), label="raise_error")
        for task in attached:
            self._end(task, data.draw(st.sampled_from(ENDS), label=f"{task} ends"))
        start = len(self.log)
        raised: BaseException | None = None
        with bounded("join() after releasing every attached task"):
            try:
                returned = self.pool.join(timeout=WAIT, raise_error=raise_error)
            except TaskFailure as exc:
                raised = exc
        for task in attached:
            wait_for(task.done, f"{task} ending")
        # The first failure join() saw: the first reported one to end.
        failures = [
            e[1].failure
            for e in self.log[start:]
            if e[0] == "end" and e[1].expect == ("raise",) and e[1].method != "submit"
        ]
        if raise_error and failures:
            assert raised is failures[0], f"join(raise_error=True) raised {raised!r}, expected {failures[0]!r}"
        else:
            assert raised is None and returned is True
        self._absorb()

    # Not before a few tasks ran: a closed pool has little left to test.
    @precondition(lambda self: not self.closed and self.counts["tasks_started"] >= 8)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        """close(): idle workers exit now, busy ones after their task; a spawn waiting
        for a slot gets PoolClosed."""
        assert self.pool is not None
        waiter = None
        if self._full() and data.draw(st.booleans(), label="a spawn waits"):
            task = self._new_task(data, "spawn")
            entered = Event()
            box: list[object] = []

            def wait_in_spawn() -> None:
                entered.set()
                try:
                    box.append(self.pool.spawn(_run, self, task, tag=task.tid))  # type: ignore[union-attr]
                except BaseException as exc:
                    box.append(exc)

            waiter = gevent.spawn(wait_in_spawn)
            wait_for(entered, "a greenlet calling spawn on the full pool")
            assert not box, f"spawn on a full pool returned {box}"
            self._absorb()  # culls while it waited: the model's idle list must be exact now
        self.pool.close()
        self.log.append(("close",))
        if waiter is not None:
            with bounded("a spawn waiting for a slot, after close()"):
                waiter.join()
            assert len(box) == 1 and isinstance(box[0], PoolClosed), box
        self._absorb()
        wait_until(lambda: all(w.dead for w in self.retired_workers), WAIT, "idle workers exiting after close()")

    # Nothing here may depend on how many workers idle: that is up to the culling
    # timers, and hypothesis needs the same choices to lead to the same rules.
    @precondition(lambda self: self.cull and not self.closed)
    @rule(data=st.data())
    def idle_out(self, data: st.DataObject) -> None:
        """Idle workers are culled after max_idle, oldest first, down to min_idle."""
        assert self.pool is not None
        pool = self.pool
        # Free some workers half a max_idle apart first: then one pass of the culler
        # cannot take them all, and it must re-arm itself for the rest.
        for _ in range(data.draw(st.integers(0, 2), label="staggered releases")):
            if not self.running:
                break
            task = self._pick(data, self.running, "finishes")
            self._end(task, "return")
            wait_for(task.done, f"{task} ending")
            gevent.sleep(self.max_idle / 2)
        self._absorb()
        if len(self.ready) > self.min_idle:
            wait_until(lambda: pool.stats().idle <= self.min_idle, WAIT, f"culling down to min_idle={self.min_idle}")
            self._absorb()
            assert len(self.ready) == self.min_idle, f"culled below min_idle={self.min_idle}"
            # Nothing above min_idle, so no cull may be pending: an over-eager culler
            # that would go below min_idle later has nothing to run on.
            assert pool._cull_timer is None, "a cull is still pending at min_idle"

    @rule(data=st.data())
    def probe(self, data: st.DataObject) -> None:
        """Calls that change nothing: wait_available and refused calls."""
        assert self.pool is not None
        probe = data.draw(st.sampled_from(("wait_available", "refused", "misuse")), label="probe")
        if probe == "wait_available":
            if self.closed:
                with pytest.raises(PoolClosed):
                    self.pool.wait_available()
            elif self._full():
                assert self.pool.wait_available(timeout=EXPIRE) == 0
            else:
                assert self.pool.wait_available() == (1 if self.size is None else self.size - self.busy)
        elif probe == "refused":
            # try_spawn on a full pool, anything on a closed one: refused at once.
            method = data.draw(st.sampled_from(SPAWN_METHODS if self.closed else ("try_spawn",)), label="method")
            task = self._new_task(data, method)
            reply = self.offer(task, method, log_first=False)
            if self._full():
                assert isinstance(reply, PoolClosed) if self.closed else reply is False, reply
            else:
                self._check_reply(task, method, reply, full=False)
                self._settle([task])
        else:
            with pytest.raises(RuntimeError):
                self.pool.detach()
            with pytest.raises(RuntimeError):
                gpool.detach()
            not_callable: Any = 42
            for method in SPAWN_METHODS:
                # Checked first, even on a full or closed pool, so it never waits.
                with pytest.raises(TypeError):
                    getattr(self.pool, method)(not_callable)
        self._absorb()


def test_pool_model() -> None:
    run_state_machine_as_test(
        PoolModel,
        settings=settings(
            max_examples=scaled(300),
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    # Each example checked the workers it saw; this also finds any worker started and
    # never seen (one scan of the heap, not one per example: it is slow).
    gc.collect()
    alive = [obj for obj in gc.get_objects() if isinstance(obj, Worker) and not obj.dead and obj.owner in POOLS]
    assert not alive, f"workers alive after their pool was closed and joined: {alive}"


def test_kill_with_an_exception_counts_a_submit_task_as_killed() -> None:
    """README: "A task that ends with the kill is counted in stats().tasks_killed",
    even when submit()'s wrapper sees the kill as an ordinary Exception (found by the
    model above)."""
    pool = WorkerPool(2)
    result = pool.submit(gevent.sleep, 60)
    gevent.sleep(0)
    pool.kill(StopError)
    stats = pool.stats()
    pool.close()
    assert pool.join(timeout=WAIT)
    assert isinstance(result.exception, StopError)
    assert (stats.tasks_killed, stats.tasks_failed) == (1, 0), stats
