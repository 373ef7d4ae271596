"""gevent.pool.Pool's helpers on a WorkerPool: apply, map, imap and imap_unordered.

Each item runs as a task on the pool's workers (submitted, so its exception comes
back to the caller instead of being reported), which keeps the pool's limits and
isolation. As in gevent, a plain greenlet of its own (the feeder) walks the input and
submits the items, waiting for a free slot whenever the pool is full, while the caller
takes the results; the pool's ``overflow`` policy is for servers and ``spawn``, and
the helpers wait for slots under both policies.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol

from gevent import Greenlet, GreenletExit
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from gevent.queue import UnboundQueue
from greenlet import getcurrent

from .errors import PoolFull
from .slots import SlotCount
from .validate import check_count
from .worker import Worker


class WorkerPool(Protocol):
    """What the helpers use of :class:`~gpool.WorkerPool` (which imports this module)."""

    _count: SlotCount

    @property
    def size(self) -> int | None: ...

    def _has_free_slot(self) -> bool: ...

    def wait_available(self, timeout: float | None = None) -> int: ...

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> AsyncResult: ...


__all__ = ["MapResults", "apply", "check_maxsize", "refuse_to_wait_in_own_task"]


def refuse_to_wait_in_own_task(pool: WorkerPool, method: str) -> None:
    """Raise PoolFull where ``spawn`` would: called from one of *pool*'s own tasks
    while every slot is taken, waiting for results that need a slot could deadlock."""
    current = getcurrent()
    if isinstance(current, Worker) and current.owner is pool and pool._count.all_taken():
        raise PoolFull(
            f"{method}() called from one of the pool's own tasks while all {pool.size} slots are busy; "
            "waiting could deadlock: use a larger size, or call it from outside the pool"
        )


def apply(pool: WorkerPool, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``func(*args, **kwargs)`` on one of *pool*'s workers and wait for its result."""
    refuse_to_wait_in_own_task(pool, "apply")
    return _submit_when_free(pool, func, args, kwargs).get()


def _submit_when_free(
    pool: WorkerPool, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncResult:
    # A slot first, then submit: nothing switches in between, so the slot cannot be
    # taken, and a pool that turns away overflow is never asked to.
    while not pool._has_free_slot():
        pool.wait_available()  # PoolClosed once the pool closes
    return pool.submit(func, *args, **kwargs)


class _FedAll:
    """Put on the results queue when the feeder stops: how many items it submitted,
    and what stopped it early (the input raising, the pool closing), if anything."""

    __slots__ = ("count", "error")

    def __init__(self, count: int, error: BaseException | None) -> None:
        self.count = count
        self.error = error


class MapResults(Iterator[Any]):
    """The iterator ``imap`` and ``imap_unordered`` return.

    Results come in input order (*ordered*) or as the tasks end. A task's exception
    is raised by the ``next()`` that reaches it, and iteration may go on past it, as
    with gevent. If the input itself raises, or the pool closes while items are still
    to be submitted, that error is raised once every submitted item's result has been
    handed out. With *maxsize*, at most that many items are submitted and not yet
    taken by the caller: the feeder waits for the caller (back-pressure).
    :meth:`close` stops the feeding early.
    """

    def __init__(
        self,
        pool: WorkerPool,
        func: Callable[..., Any],
        items: Iterable[tuple[Any, ...]],
        *,
        ordered: bool,
        maxsize: int | None,
    ) -> None:
        self._ordered = ordered
        self._room = None if maxsize is None else Semaphore(maxsize)
        # (index, AsyncResult) as each task ends; a _FedAll when the feeding stops.
        self._arrived: UnboundQueue = UnboundQueue()
        self._early: dict[int, AsyncResult] = {}  # ordered: results ahead of their turn
        self._handed = 0  # results handed to the caller so far
        self._fed: _FedAll | None = None
        self._feeder: Greenlet | None = Greenlet.spawn(self._feed, pool, func, items)

    def __iter__(self) -> MapResults:
        return self

    def __next__(self) -> Any:
        while True:
            result = self._early.pop(self._handed, None) if self._ordered else None
            if result is not None:
                break
            fed = self._fed
            if fed is not None and self._handed >= fed.count:
                error, fed.error = fed.error, None
                if error is not None:
                    raise error
                raise StopIteration
            index, arrived = self._arrived.get()
            if isinstance(arrived, _FedAll):
                self._fed = arrived
                self._feeder = None
            elif not self._ordered or index == self._handed:
                result = arrived
                break
            else:
                self._early[index] = arrived
        self._handed += 1
        if self._room is not None:
            self._room.release()
        return result.get()  # the value, or the task's exception raised here

    def close(self) -> None:
        """Submit no more items; those already running finish, their results dropped."""
        feeder = self._feeder
        if feeder is not None:
            self._feeder = None
            feeder.kill(block=False)

    def _feed(self, pool: WorkerPool, func: Callable[..., Any], items: Iterable[tuple[Any, ...]]) -> None:
        count = 0
        error: BaseException | None = None
        try:
            for args in items:
                if self._room is not None:
                    self._room.acquire()
                result = _submit_when_free(pool, func, args, {})
                result.rawlink(self._arrival(count))
                count += 1
        except GreenletExit:
            pass  # close(): the caller wants no more
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error = exc
        finally:
            self._arrived.put((count, _FedAll(count, error)))

    def _arrival(self, index: int) -> Callable[[AsyncResult], None]:
        arrived = self._arrived

        def put(result: AsyncResult) -> None:
            arrived.put((index, result))

        return put


def check_maxsize(maxsize: object) -> int | None:
    """``imap(maxsize=)``: an int >= 1, or None or 0 for no bound (as gevent reads 0)."""
    if type(maxsize) is int and maxsize == 0:
        return None
    return check_count("maxsize", maxsize, minimum=1, allow_none=True)
