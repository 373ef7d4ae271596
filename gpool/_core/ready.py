"""The ready list: idle workers ordered by the time they were released.

Plain Python with no greenlet in sight, so it can be tested with fake workers.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, TypeVar

__all__ = ["ReadyStack"]


class _Idle(Protocol):
    idle_since: float


W = TypeVar("W", bound=_Idle)


class ReadyStack(deque[W]):
    """Idle workers, coldest at the left end, hottest at the right.

    Dispatch pops the most recently released worker (its stack and caches are still
    warm); culling trims from the other end. Both ends must be cheap, which is why this
    is a deque and not a list: fasthttp once lost culling altogether when a rewrite
    could only reach the hot end. It *is* a deque so that the pool's hot paths use the
    C methods ``pop()`` and ``append()`` directly.

    Invariant: ``idle_since`` never decreases from left to right. A worker is added
    by stamping its ``idle_since`` from the pool's monotonic clock, then ``append``
    (the pool does it inline on its hot path; there is no method for it).
    """

    __slots__ = ()

    def oldest_release(self) -> float:
        """The release time of the coldest worker (IndexError if empty)."""
        return self[0].idle_since

    def pop_stale(self, released_before: float, keep: int) -> list[W]:
        """Remove the workers released before *released_before*, coldest first.

        Never leaves fewer than *keep* workers behind.
        """
        stale: list[W] = []
        while len(self) > keep and self[0].idle_since < released_before:
            stale.append(self.popleft())
        return stale

    def pop_all(self) -> list[W]:
        """Remove and return every worker, coldest first."""
        workers = list(self)
        self.clear()
        return workers
