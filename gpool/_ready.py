"""The ready list: idle workers ordered by the time they were released.

Plain Python with no greenlet in sight, so it can be tested with fake workers.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

__all__ = ["ReadyStack"]


class _Idle(Protocol):
    idle_since: float


W = TypeVar("W", bound=_Idle)


class ReadyStack(Generic[W]):
    """Idle workers, coldest at the left end, hottest at the right.

    Dispatch pops the most recently released worker (its stack and caches are still
    warm); culling trims from the other end. Both ends must be cheap, which is why this
    is a deque and not a list: fasthttp once lost culling altogether when a rewrite
    could only reach the hot end.

    Invariant: ``idle_since`` never decreases from left to right, because ``push``
    stamps each worker with a clock that only moves forward.
    """

    __slots__ = ("_workers",)

    def __init__(self) -> None:
        self._workers: deque[W] = deque()

    def __len__(self) -> int:
        return len(self._workers)

    def __bool__(self) -> bool:
        return bool(self._workers)

    def push(self, worker: W, now: float) -> None:
        """Add *worker* at the hot end, released at time *now*."""
        worker.idle_since = now
        self._workers.append(worker)

    def pop(self) -> W:
        """Remove and return the most recently released worker (IndexError if empty)."""
        return self._workers.pop()

    def oldest_release(self) -> float:
        """The release time of the coldest worker (IndexError if empty)."""
        return self._workers[0].idle_since

    def pop_stale(self, released_before: float, keep: int) -> list[W]:
        """Remove the workers released before *released_before*, coldest first.

        Never leaves fewer than *keep* workers behind.
        """
        workers = self._workers
        stale: list[W] = []
        while len(workers) > keep and workers[0].idle_since < released_before:
            stale.append(workers.popleft())
        return stale

    def pop_all(self) -> list[W]:
        """Remove and return every worker, coldest first."""
        workers = list(self._workers)
        self._workers.clear()
        return workers
