"""A gevent server that frees a slot for a waiting client by ending a keep-alive connection.

gevent's accept loop asks ``full()`` before each accept; while it says True the server
stops watching its listener until the pool frees a slot, and clients wait in the
listen queue, however long the keep-alive connections holding every slot stay idle.

This server, when its pool has no free slot, first **accepts** the waiting client
itself and holds it, then asks its :class:`~gpool._serving.keepalive.IdleConnections` to end a
connection for it; once the slot is free the held client is served. Accepting first
matters when several processes share one listener (gunicorn ``-w N``): a client
another process accepts never costs this process a connection.
"""

from __future__ import annotations

from typing import Any, Callable

from .keepalive import DEFAULT_RECLAIM_IDLE_AFTER, IdleConnections

__all__ = ["ReclaimingServer"]

_Accepted = tuple[Any, Any]  # what StreamServer.do_read returns: (socket, address)


class ReclaimingServer:
    """Mixin for ``gevent.server.StreamServer`` and its subclasses (pywsgi's included).

    Takes ``reclaim_idle_after`` (seconds, default 1.0): how long a keep-alive
    connection must have waited for its next request before it may be hung up to free
    a slot (or during a drain); busier connections are closed gracefully instead.
    Connection handlers register in ``idle_connections``.
    """

    # Provided by gevent's BaseServer / StreamServer.
    pool: Any
    socket: Any
    loop: Any
    full: Callable[[], bool]
    do_handle: Callable[..., Any]
    do_close: Callable[..., Any]

    def __init__(self, *args: Any, reclaim_idle_after: float = DEFAULT_RECLAIM_IDLE_AFTER, **kwargs: Any) -> None:
        self.idle_connections = IdleConnections(reclaim_idle_after)
        self._held: _Accepted | None = None
        self._listener_watcher: Any = None
        super().__init__(*args, **kwargs)

    def set_spawn(self, spawn: Any) -> None:
        super().set_spawn(spawn)  # type: ignore[misc]
        if self.pool is not None:
            # gevent binds pool.full as the server's full(); ours consults it.
            self.full = self._full_unless_reclaiming

    def _full_unless_reclaiming(self) -> bool:
        """The accept loop's question, in the hub. Never blocks."""
        pool = self.pool
        if pool.free_count() > 0:
            return False
        if getattr(pool, "closed", False):
            return True  # as WorkerPool.full() says: nothing more to accept
        if self._held is None:
            self._hold()
            if self._held is None:
                if pool.full():
                    self._watch_listener()  # paused: notice the next client ourselves
                    return True
                return False  # overflow="reject": the pool answers whoever comes
        # Under overflow="backlog" (full() is True) the client may wait for a slot;
        # under "reject" only an idle connection is ended for it, else it is turned away.
        queueing = bool(pool.full())
        if self.idle_connections.want_slot(wait=queueing):
            return True  # paused until the slot frees; then the held client is served
        return queueing

    def _hold(self) -> None:
        """Accept the client waiting in the listen queue, if any, and hold it."""
        self._held = self._accept_waiting()
        if self._held is not None:
            # The accept loop's next read returns it. An instance attribute in front of
            # the class's do_read, there only while a client is held: every other
            # accept goes straight to gevent's (an override costs 540 instructions a
            # connection under callgrind: a Python call and a super() call per read).
            self.do_read = self._take_held

    def _take_held(self) -> _Accepted | None:
        """The held client (None if there is none), no longer held."""
        held, self._held = self._held, None
        self.__dict__.pop("do_read", None)
        if held is not None:
            self.idle_connections.slot_given()
        return held

    def start_accepting(self) -> None:
        # Called when the pool frees a slot for a paused server (and at start).
        self._stop_watching(close=False)
        super().start_accepting()  # type: ignore[misc]
        if self._held is not None and self.pool.free_count() > 0:
            self._serve_held()

    def close(self) -> None:
        self._stop_watching(close=True)
        super().close()  # type: ignore[misc]
        if self._held is not None:
            # Accepted, so it is ours to answer: serve it once a slot frees (a drain
            # is ending every connection), unless the pool goes away first.
            self._serve_held_when_free(None)

    def _accept_waiting(self) -> _Accepted | None:
        try:
            accepted: _Accepted | None = super().do_read()  # type: ignore[misc]
        except OSError:
            return None  # EMFILE and the like: gevent's own accept will report it
        return accepted or None

    def _serve_held(self) -> None:
        held = self._take_held()
        if held is None:
            return
        try:
            self.do_handle(*held)
        except Exception as exc:  # noqa: BLE001 - reported; the client is closed, the server goes on
            self.do_close(*held)
            self.loop.handle_error((held[1], self), type(exc), exc, exc.__traceback__)

    def _serve_held_when_free(self, _signal: Any) -> None:
        if self._held is None:
            return
        pool = self.pool
        if getattr(pool, "closed", False):
            held = self._take_held()
            if held is not None:
                self.do_close(*held)
        elif pool.free_count() > 0:
            self._serve_held()
        else:
            pool._semaphore.rawlink(self._serve_held_when_free)

    def _watch_listener(self) -> None:
        """While paused with nobody held, wake when a client arrives."""
        watcher = self._listener_watcher
        if watcher is None:
            watcher = self._listener_watcher = self.loop.io(self.socket.fileno(), 1)
        if not watcher.active:
            watcher.start(self._client_arrived)

    def _client_arrived(self) -> None:
        """Hub callback: the listener is readable while the pool is full."""
        self._stop_watching(close=False)
        if self._held is not None or self.pool.free_count() > 0:
            return  # the accept loop is back, or about to be
        self._hold()
        if self._held is None:
            self._watch_listener()  # another process took it
        elif not self.idle_connections.want_slot(wait=bool(self.pool.full())) and not self.pool.full():
            self._serve_held()  # overflow="reject": turned away at once

    def _stop_watching(self, close: bool) -> None:
        watcher = self._listener_watcher
        if watcher is not None:
            watcher.stop()
            if close:
                watcher.close()
                self._listener_watcher = None
