"""The object gevent servers know as ``pool._semaphore``.

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

__all__ = ["SlotSignal"]

Link = Callable[[Any], object]


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
