"""Keep-alive connections parked between requests, and how to hang them up.

A keep-alive connection holds its pool slot while it waits for the client's next
request. When the pool is full, those idle connections starve new clients: with
``worker_connections=3`` and three keep-alive clients, a fourth waits until one of
them times out. The server integrations register a connection here while its worker
waits for the first byte of a next request (nothing of it buffered), and take it out
as soon as bytes arrive. Closing such a connection cuts no request; HTTP/1.1 lets a
server close an idle persistent connection at any time.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

from gevent.monkey import get_original

__all__ = ["IdleConnections", "ReclaimingServer", "client_waiting", "connection_state"]

_log = logging.getLogger("gpool")

_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)

# The real select(), even under monkey-patching: the hub asks without waiting.
_select = get_original("select", "select")


def client_waiting(listener: Any) -> bool:
    """True when a connection waits in *listener*'s accept queue. Never blocks.

    gevent's accept loop asks ``full()`` before every accept it might make, not only
    when a client waits, so the servers check this before reclaiming anything.
    """
    try:
        readable, _, _ = _select([listener], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)


class IdleConnections:
    """The idle keep-alive connections of one server, oldest first."""

    def __init__(self) -> None:
        # Insertion-ordered: the first key is the connection parked longest ago.
        self._parked: dict[object, Any] = {}
        self.draining = False
        """Set by :func:`gpool.drain`: no connection parks any more."""
        self.reclaimed = 0
        """Idle connections closed to free a slot for a new client."""
        self.on_park: Callable[[], None] | None = None
        """Called (in the parking greenlet) each time a connection parks."""

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, key: object, sock: Any) -> bool:
        """Note that *sock* waits for a next request. False while draining: then the
        caller should end the connection instead of waiting."""
        if self.draining:
            return False
        self._parked[key] = sock
        if self.on_park is not None:
            self.on_park()
        return True

    def unpark(self, key: object) -> None:
        self._parked.pop(key, None)

    def reclaim_oldest(self) -> bool:
        """Close the longest-idle connection that has no request arriving.

        True when a slot is about to free (that connection's worker sees end of
        stream and ends its task). Runs in the hub; never blocks.
        """
        for key, sock in list(self._parked.items()):
            state = connection_state(sock)
            if state == "arriving":
                continue  # Its next request is here; its worker is about to wake.
            del self._parked[key]
            if state == "idle":
                _hang_up(sock)
                self.reclaimed += 1
                _log.debug("closed idle keep-alive connection %r to free a slot", key)
            return True
        return False

    def drain(self) -> int:
        """Stop parking and close every idle connection; return how many were closed."""
        self.draining = True
        closed = 0
        for key, sock in list(self._parked.items()):
            if connection_state(sock) == "arriving":
                continue  # Served, with Connection: close.
            del self._parked[key]
            _hang_up(sock)
            closed += 1
        return closed


def connection_state(sock: Any) -> str:
    """ "idle" (nothing received), "arriving" (bytes waiting) or "gone" (EOF, error)."""
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the real one
    try:
        data = raw.recv(1, _PEEK_FLAGS)
    except BlockingIOError:
        return "idle"
    except ValueError:
        return "arriving"  # A socket that refuses flags (TLS): never cut it blind.
    except OSError:
        return "gone"
    return "arriving" if data else "gone"


def _hang_up(sock: Any) -> None:
    # shutdown, not close: the worker blocked on this socket sees end of stream and
    # ends its task the ordinary way, closing the socket itself.
    raw = getattr(sock, "_sock", sock)
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ReclaimingServer:
    """Mixin for gevent servers (``StreamServer`` and subclasses): hand the slot of an
    idle keep-alive connection to a client waiting to be accepted.

    gevent's accept loop asks ``full()`` before each accept; while it says True the
    server stops watching its listener until the pool frees a slot. This mixin's
    ``full()`` closes the longest-idle connection instead when a client is waiting,
    and while the server is paused it watches the listener itself, so a client that
    arrives later is noticed too. Connection handlers park in ``idle_connections``.
    """

    # Provided by gevent's BaseServer.
    pool: Any
    socket: Any
    loop: Any
    full: Callable[[], bool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.idle_connections = IdleConnections()
        self.idle_connections.on_park = self._connection_parked
        self._paused_full = False
        self._demand_watcher: Any = None
        super().__init__(*args, **kwargs)

    def set_spawn(self, spawn: Any) -> None:
        super().set_spawn(spawn)  # type: ignore[misc]
        if self.pool is not None:
            # gevent binds pool.full as the server's full(); ours consults it.
            self.full = self._full_unless_reclaimed

    def _full_unless_reclaimed(self) -> bool:
        pool = self.pool
        full: bool = pool.full()
        if pool.free_count() > 0 or getattr(pool, "closed", False):
            return full
        idle = self.idle_connections
        if idle and client_waiting(self.socket) and idle.reclaim_oldest():
            # A slot frees as soon as the reclaimed connection's task ends; pause
            # until then (the pool tells the server when a slot is free).
            self._paused_full = True
            return True
        if full:
            self._paused_full = True
            self._watch_for_clients()
        return full

    def start_accepting(self) -> None:
        self._paused_full = False
        self._stop_watching(close=False)
        super().start_accepting()  # type: ignore[misc]

    def close(self) -> None:
        self._paused_full = False
        self._stop_watching(close=True)
        super().close()  # type: ignore[misc]

    def _connection_parked(self) -> None:
        if self._paused_full:
            self._watch_for_clients()

    def _watch_for_clients(self) -> None:
        """While paused with idle connections, wake when a client arrives."""
        if not self.idle_connections:
            return  # re-armed by the next connection that parks
        watcher = self._demand_watcher
        if watcher is None:
            watcher = self._demand_watcher = self.loop.io(self.socket.fileno(), 1)
        if not watcher.active:
            watcher.start(self._client_arrived)

    def _client_arrived(self) -> None:
        """Hub callback: the listener is readable while the pool is full."""
        # One shot: the listener stays readable until accepted, and the reclaimed
        # slot (or the next park) brings the server back here.
        self._stop_watching(close=False)
        if self._paused_full and self.pool.free_count() == 0:
            self.idle_connections.reclaim_oldest()

    def _stop_watching(self, close: bool) -> None:
        watcher = self._demand_watcher
        if watcher is not None:
            watcher.stop()
            if close:
                watcher.close()
                self._demand_watcher = None
