"""A pool's slots: how many are taken (:class:`SlotCount`), and the object gevent
servers know as ``pool._semaphore`` (:class:`SlotSignal`), which tells waiters when
one frees.

A gevent server given ``spawn=pool`` calls ``pool._semaphore.rawlink(callback)`` when
it is built and whenever it pauses accepting because the pool is full, and
``unlink(callback)`` when it closes. It expects each callback to fire once, in the
hub, with one argument, as soon as a slot is free: right away if one already is. A
callback that never fires leaves the server deaf for good.

:class:`SlotSignal` implements exactly that contract, without the acquire/release of
a real semaphore on every task. The pool uses it too for greenlets waiting in
``spawn`` or ``wait_available``.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["SlotCount", "SlotSignal"]

Link = Callable[[Any], object]


class SlotCount:
    """The slot accounting of one pool: at most *size* tasks hold a slot at once.

    A task holds a slot from the moment it is handed to a worker until it ends, unless
    it detaches (:func:`gpool.detach`): then it runs on without one, and at most
    *max_detached* tasks may do so at once. Plain attributes: the hot paths (spawn and
    a task's end) count ``busy`` and ``detached`` directly; the methods name the rules.
    """

    __slots__ = ("busy", "detached", "max_detached", "over_size", "size")

    def __init__(self, size: int | None, max_detached: int | None) -> None:
        self.size = size  # None: no limit
        self.max_detached = max_detached
        self.busy = 0  # tasks holding a slot
        self.detached = 0  # tasks running without one
        # True after a resize below the tasks running, until a task's end finds a
        # free slot for its worker to park in again (see idle_would_exceed_free).
        self.over_size = False

    def all_taken(self) -> bool:
        return self.size is not None and self.busy >= self.size

    def free(self) -> int:
        """Free slots; 1 when unbounded (gevent's ``Pool.free_count()`` answer)."""
        if self.size is None:
            return 1
        return max(self.size - self.busy, 0)

    def can_detach(self) -> bool:
        return self.max_detached is None or self.detached < self.max_detached

    def detach(self) -> None:
        """A running task gives its slot back and runs on."""
        self.busy -= 1
        self.detached += 1

    def idle_would_exceed_free(self, idle: int) -> bool:
        """Whether one more idle worker than *idle* would outnumber the free slots.

        ``spawn()`` trusts an idle worker to mean a free slot; a detached task that
        ends has no slot of its own to give, so its worker parks only if this is false.
        """
        return self.size is not None and self.busy + idle >= self.size


class SlotSignal:
    """Fires one-shot callbacks in the hub whenever the pool has a free slot."""

    __slots__ = ("_get_hub", "_has_free_slot", "_links", "_scheduled", "waiting")

    def __init__(self, has_free_slot: Callable[[], bool], get_hub: Callable[[], Any]) -> None:
        self._has_free_slot = has_free_slot
        self._get_hub = get_hub
        self._links: list[Link] = []
        self._scheduled = False
        # True while some callback waits for a slot. An attribute, not a property: the
        # pool reads it after every task.
        self.waiting = False

    def rawlink(self, callback: Link) -> None:
        """Call ``callback(self)`` in the hub once a slot is free (soon, if one is now)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self._links.append(callback)
        self.waiting = True
        if self._has_free_slot():
            self.notify()

    def unlink(self, callback: Link) -> None:
        """Forget *callback* if it has not fired yet; unknown callbacks are ignored."""
        try:
            self._links.remove(callback)
        except ValueError:
            pass
        self.waiting = bool(self._links)

    def locked(self) -> bool:
        """True when no slot is free (the name gevent's Semaphore uses)."""
        return not self._has_free_slot()

    def notify(self) -> None:
        """Arrange for the waiting callbacks to run in the hub. Never switches."""
        if self._links and not self._scheduled:
            self._scheduled = True
            self._get_hub().loop.run_callback(self._fire)

    def wake_all(self) -> None:
        """Fire every waiting callback soon, free slot or not (the pool is closing)."""
        if self._links:
            self._get_hub().loop.run_callback(self._fire, True)

    def _fire(self, force: bool = False) -> None:
        if not force:
            self._scheduled = False
            # The slot may have been taken again since notify(): then the callbacks
            # keep waiting for the next release.
            if not self._has_free_slot():
                return
        links, self._links = self._links, []
        self.waiting = False
        for callback in links:
            # One failing callback must not cost the others their wake-up.
            try:
                callback(self)
            except BaseException as exc:  # noqa: BLE001 - reported, as gevent reports link errors
                self._get_hub().handle_error(callback, type(exc), exc, exc.__traceback__)
