"""What a pool built with ``overflow="reject"`` does with a connection it has no slot for.

gevent's servers stop accepting while their pool is full, so excess clients wait in
the kernel's listen backlog ("backlog", the default). With "reject" the server keeps
accepting and the pool turns the excess away at once, so clients learn about the
overload instead of timing out:

- a ``pywsgi.WSGIServer`` connection gets ``503 Service Unavailable`` with
  ``Retry-After`` and ``Connection: close``;
- any other server connection goes to the pool's *on_reject* callback if it has one,
  and is then closed;
- a task that is not a server connection raises :class:`~gpool.PoolFull`.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from time import monotonic
from typing import Any, Callable

from gevent import Timeout, spawn_raw

__all__ = ["OVERFLOW_POLICIES", "OverloadLog", "answer_503", "server_connection", "turn_away"]

_log = logging.getLogger("gpool")

OVERFLOW_POLICIES = ("backlog", "reject")

RETRY_AFTER_SECONDS = 1

_BODY = b"Server busy: too many connections. Retry shortly.\n"
RESPONSE_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"Retry-After: " + str(RETRY_AFTER_SECONDS).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _BODY
)

# How long a rejected WSGI client gets to send its request head (read first, so that
# closing the socket does not reset the connection under the client's feet), and how
# much of it is read.
_READ_TIMEOUT = 2.0
_MAX_HEAD = 65536

try:  # The wrapper gevent's servers spawn for each connection (stable since gevent 1.1).
    from gevent.baseserver import _handle_and_close_when_done as _server_wrapper
except ImportError:  # pragma: no cover - a future gevent without it
    _server_wrapper = None

ServerConnection = tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]


def server_connection(func: Callable[..., Any], args: tuple[Any, ...]) -> ServerConnection | None:
    """``(handle, close, (socket, address))`` when *func(*args)* is a server's connection task."""
    if func is _server_wrapper and len(args) == 3 and isinstance(args[2], tuple):
        return args[0], args[1], args[2]
    return None


def turn_away(connection: ServerConnection, on_reject: Callable[..., Any] | None, hub: Any) -> None:
    """Answer or close a connection the pool has no slot for. Runs in the caller
    (usually the hub, in the server's accept callback), so it never blocks."""
    handle, close, conn_args = connection
    if on_reject is not None:
        try:
            on_reject(*conn_args)
        except Exception as exc:  # noqa: BLE001 - reported; the accept loop must go on
            hub.handle_error(on_reject, type(exc), exc, exc.__traceback__)
        finally:
            close(*conn_args)
    else:
        server = getattr(handle, "__self__", None)
        if _is_wsgi_server(server):
            # Reading the request takes a greenlet; a bare one, outside the pool.
            spawn_raw(answer_503, close, conn_args, _tls_wrapper(server))
        else:
            close(*conn_args)


def _is_wsgi_server(server: object) -> bool:
    from gevent.pywsgi import WSGIServer

    return isinstance(server, WSGIServer)


def _tls_wrapper(server: Any) -> Callable[[Any], Any] | None:
    """How *server* makes a TLS connection of an accepted socket; None without TLS."""
    if not getattr(server, "ssl_enabled", False):
        return None
    wrap: Callable[..., Any] = server.wrap_socket
    return partial(wrap, **server.ssl_args)


def answer_503(close: Callable[..., Any], conn_args: tuple[Any, ...], wrap: Callable[[Any], Any] | None = None) -> None:
    """In a greenlet of its own: read the request head, answer 503, then close.

    With *wrap* (a TLS server), the handshake comes first: a TLS client sends its
    request only after it, and would take a plain-text answer for a protocol error.
    """
    sock = conn_args[0]
    tls = None
    try:
        if wrap is not None:
            # A socket timeout, not a gevent.Timeout: a failed handshake closes the
            # TLS socket it was building, which owns the connection by then.
            sock.settimeout(_READ_TIMEOUT)
            sock = tls = wrap(sock)
        with Timeout(_READ_TIMEOUT, False):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            sock.sendall(RESPONSE_503)
            sock.shutdown(socket.SHUT_WR)
            # Let the client see the answer and hang up first: closing with unread
            # bytes (a request body) would reset the connection.
            while sock.recv(4096):
                pass
    except OSError:
        pass  # The client went away (or failed its handshake); nothing more to tell it.
    finally:
        if tls is not None:
            tls.close()
        close(*conn_args)


class OverloadLog:
    """A WARNING when connections are turned away: at once, then at most once a minute."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._unreported = 0
        self._next_report = 0.0

    def note(self, size: int | None) -> None:
        self._unreported += 1
        now = monotonic()
        if now >= self._next_report:
            _log.warning(
                "pool full (size=%s, overflow='reject'): turned away %d connection(s) since the last report",
                size,
                self._unreported,
            )
            self._unreported = 0
            self._next_report = now + self._interval
