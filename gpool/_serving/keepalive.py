"""The keep-alive connections of one server, and how one is ended without losing a request.

A keep-alive connection holds its pool slot while it waits for the client's next
request. When the pool is full, such connections starve new clients. Ending one is
safe only in two ways:

- **gracefully**: a response that carries ``Connection: close`` tells the client not
  to send another request on this connection; the server closes after it;
- **after a quiet spell**: a connection that has waited for its next request, with
  nothing of it received, for at least ``reclaim_idle_after`` seconds is hung up. HTTP
  lets a server do that at any time, but a client may be sending on it at that very
  moment (nginx answers such a POST with 502), so gpool never hangs up a connection
  that was busy a moment ago: one sending back to back is closed only gracefully.

The server integrations (:mod:`gpool.wsgi`, :mod:`gpool.workers`) register every
connection here and *park* it while its worker waits, in the protocol's own read of
the next request, for the first byte of it (:meth:`IdleConnections.wait_parked`: the
socket's own watcher, no extra wait or timer per request); it is unparked the moment
that byte arrives. Everything here runs in the hub or in the
connection's own greenlet, and never blocks.
"""

from __future__ import annotations

import logging
import socket
from time import monotonic
from typing import Any, Callable, TypeVar

from gevent import get_hub
from gevent.socket import wait_read

from .._core.validate import check_seconds

__all__ = ["DEFAULT_RECLAIM_IDLE_AFTER", "Connection", "IdleConnections", "connection_state", "is_tls"]

_log = logging.getLogger("gpool")

_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)

# Long enough that a client or proxy reusing its connections under load (nginx takes
# the most recently used one first) is not the one hung up; short next to gunicorn's
# 2 s keep-alive timeout, so a new client is not kept waiting long.
DEFAULT_RECLAIM_IDLE_AFTER = 1.0

_MIN_DELAY = 0.005


# Socket classes by whether they are TLS sockets (have pending()). Asking a plain
# socket for an attribute it lacks raises and formats an AttributeError, through a
# Python __getattr__ for a gevent socket: 10,000 instructions a connection under
# callgrind (2,000 asking its class), where this costs a dict probe.
_TLS_CLASSES: dict[type, bool] = {}


def is_tls(sock: Any) -> bool:
    """Whether *sock* is a TLS socket, which can hold bytes a read of the raw socket
    cannot see (``pending()``)."""
    kind = type(sock)
    tls = _TLS_CLASSES.get(kind)
    if tls is None:
        tls = _TLS_CLASSES[kind] = hasattr(kind, "pending")
    return tls


def socket_parts(sock: Any) -> tuple[Any, Any]:
    """``(raw, pending)`` of an accepted gevent socket, for :meth:`IdleConnections.receive_next`."""
    if is_tls(sock):
        return None, sock.pending
    # gevent's socket wraps a non-blocking socket of the standard library.
    return getattr(sock, "_sock", None), None


class Connection:
    """One client connection of a server, from its accept to its close."""

    __slots__ = ("close_requested", "parked_since", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.parked_since = 0.0
        # Set in the hub: the next response whose headers are not sent yet must carry
        # "Connection: close", and the connection ends after it.
        self.close_requested = False

    def request_close(self) -> None:
        """Ask the connection to end after a response that says so. Runs in the hub."""
        self.close_requested = True


_C = TypeVar("_C", bound=Connection)


class IdleConnections:
    """Every open connection of one server; the parked ones in the order they parked.

    A server asks :meth:`want_slot` when a client it has accepted finds the pool full,
    and :meth:`drain` when it shuts down. ``len()`` is the number parked now.
    """

    def __init__(self, reclaim_idle_after: float = DEFAULT_RECLAIM_IDLE_AFTER, clock: Callable[[], float] = monotonic):
        self.reclaim_idle_after = check_seconds("reclaim_idle_after", reclaim_idle_after)
        self._clock = clock
        # Insertion-ordered: the first key opened (or parked) longest ago.
        self._open: dict[Connection, None] = {}
        self._parked: dict[Connection, None] = {}
        self.draining = False
        """Set by :meth:`drain`: every connection ends after its next response."""
        self.reclaimed = 0
        """Idle connections hung up to free a slot for a new client."""
        self.asked_to_close = 0
        """Connections asked to end gracefully (``Connection: close``) to free a slot."""
        self.drained = 0
        """Idle connections hung up by a drain."""
        self._wanted = False
        self._timer: Any = None

    def __len__(self) -> int:
        return len(self._parked)

    # -- called by the connection's greenlet -----------------------------------------

    def open(self, sock: Any, kind: type[_C] = Connection) -> _C:  # type: ignore[assignment]
        connection = kind(sock)
        if self.draining:
            connection.close_requested = True
        self._open[connection] = None
        return connection

    def close(self, connection: Connection) -> None:
        self._open.pop(connection, None)
        self._parked.pop(connection, None)

    def wait_parked(self, connection: Connection, sock: Any) -> None:
        """Block until *sock* is readable, *connection* parked meanwhile: it waits for
        the first byte of its next request.

        For the keep-alive wait of a read that has just found nothing: the caller then
        reads the socket, which has data (or EOF) for it. Raises what the socket's own
        blocking read would on its timeout.
        """
        connection.parked_since = self._clock()
        self._parked[connection] = None
        if self._wanted or self.draining:
            self._arm_timer()
        try:
            _wait_readable(sock)
        finally:
            self._parked.pop(connection, None)

    def receive_next(self, connection: Connection, sock: Any, raw: Any, pending: Any, method: str, arg: Any) -> Any:
        """``sock.<method>(arg)`` (``recv``/``recv_into``) for the first bytes of
        *connection*'s next request, parked while none have arrived.

        *raw* is the standard library socket under a plain gevent socket (None over
        TLS), *pending* a TLS socket's ``pending`` (None without TLS): both found once
        per connection by the caller (see :func:`socket_parts`).
        """
        if raw is not None:
            try:
                # Under load the next request is often here already: then there is no
                # wait to park for (and no gevent wrapper to go through).
                return getattr(raw, method)(arg)
            except BlockingIOError:
                pass
        # Idle means nothing of a next request has arrived, and a TLS socket hides two
        # kinds of arrival from a peek at the raw socket: bytes already decrypted with
        # an earlier record (pending()), and the first part of a record, which OpenSSL
        # takes off the socket and holds until the rest arrives. So a TLS connection is
        # parked only while its socket has nothing to read, never during the TLS read
        # (one extra wait per request on TLS).
        if pending is None or not pending():
            self.wait_parked(connection, sock)
        return getattr(sock, method)(arg)

    # -- called in the hub -----------------------------------------------------------

    def want_slot(self, wait: bool = True) -> bool:
        """A client this server accepted finds no free slot: end one connection for it.

        Hangs up the longest-idle connection if it has been idle long enough. Else asks
        one connection to close gracefully, and hangs it up once idle long enough
        should its client send nothing more: a parked one, or, when the client may
        *wait* for a request in flight (``overflow="backlog"``), any. True when a slot
        is on its way.
        """
        self._wanted = True
        if self._hang_up_idle(limit=1):
            return True
        candidates = self._open if wait else self._parked
        if any(connection.close_requested for connection in candidates):
            self._arm_timer()
            return True  # one already asked: its slot is for this client
        # The connection parked longest, else the one open longest.
        victim = next(iter(self._parked), None) or (next(iter(self._open), None) if wait else None)
        if victim is None:
            self._wanted = False
            return False
        victim.request_close()
        self.asked_to_close += 1
        self._arm_timer()
        return True

    def slot_given(self) -> None:
        """The waiting client got its slot."""
        self._wanted = False
        if not self.draining:
            self._stop_timer()

    def drain(self) -> None:
        """Shut down: every connection ends after its next response (which says so);
        idle ones are hung up once idle for ``reclaim_idle_after`` seconds."""
        self.draining = True
        for connection in self._open:
            connection.request_close()
        self._hang_up_idle(limit=None)
        self._arm_timer()

    def _hang_up_idle(self, limit: int | None) -> int:
        """Hang up connections parked for ``reclaim_idle_after`` seconds or more, oldest
        first, at most *limit*; return how many slots are on their way."""
        if not self._parked:
            return 0
        quiet_since = self._clock() - self.reclaim_idle_after
        freed = 0
        for connection in list(self._parked):
            if connection.parked_since > quiet_since:
                break  # parked in order: the rest are younger still
            state = connection_state(connection.sock)
            if state == "arriving":
                continue  # its next request is here; its worker is about to wake
            del self._parked[connection]
            if state == "idle":
                _hang_up(connection.sock)
                if self.draining:
                    self.drained += 1
                else:
                    self.reclaimed += 1
                _log.debug("hung up a keep-alive connection idle for %.2f s", self._clock() - connection.parked_since)
            freed += 1  # a connection already gone ends its task by itself
            if limit is not None and freed >= limit:
                break
        return freed

    def _arm_timer(self, at_least: float = _MIN_DELAY) -> None:
        """Come back when the longest-parked connection has been idle long enough, and
        not before *at_least* seconds."""
        if not self._parked:
            return
        oldest = next(iter(self._parked))
        # Not less than a loop turn: a connection whose next request is arriving is
        # unparked by its greenlet on the next one.
        delay = max(oldest.parked_since + self.reclaim_idle_after - self._clock(), at_least)
        self._stop_timer()
        self._timer = get_hub().loop.timer(delay)
        self._timer.start(self._timer_fired)

    def _timer_fired(self) -> None:
        self._stop_timer()
        if self.draining:
            self._hang_up_idle(limit=None)
            self._arm_timer()
        elif self._wanted:
            if self._hang_up_idle(limit=1):
                # One connection is ending for the waiting client: its slot reaches
                # the client within a few loop turns (slot_given() then stops this).
                # Should it not (another spawn took it), end one more, but no sooner
                # than a connection may be idle: a process descheduled for a moment
                # must not wake to a second hang-up for the same client.
                self._arm_timer(at_least=self.reclaim_idle_after)
            else:
                self._arm_timer()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()


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


def _wait_readable(sock: Any) -> None:
    try:
        # The socket's own read watcher and timeout, as gevent's recv waits on them:
        # no new watcher per wait, and no second failed recv before it.
        wait, watcher = sock._wait, sock._read_event
    except AttributeError:  # not a gevent socket
        wait_read(sock.fileno(), sock.gettimeout())
        return
    wait(watcher)


def _hang_up(sock: Any) -> None:
    # shutdown, not close: the worker blocked on this socket sees end of stream and
    # ends its task the ordinary way, closing the socket itself.
    raw = getattr(sock, "_sock", sock)
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
