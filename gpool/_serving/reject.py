"""How a connection is turned away by a pool built with ``overflow="reject"``.

The pool (:mod:`gpool._core.overflow`) decides that a task has no slot and counts it;
this module recognises a gevent server's connection among such tasks and answers it,
so that clients learn about the overload instead of timing out:

- a ``pywsgi.WSGIServer`` connection gets ``503 Service Unavailable`` with
  ``Retry-After`` and ``Connection: close``;
- any other server connection goes to the pool's *on_reject* callback if it has one,
  and is then closed;
- a task that is not a server connection raises :class:`~gpool.PoolFull`.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any, Callable

from gevent import Timeout, spawn_raw
from gevent.baseserver import BaseServer

from .._core.overflow import Answer, install_answerer

__all__ = ["answer_503", "server_connection", "turn_away"]

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

ServerConnection = tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]


def server_connection(func: Callable[..., Any], args: tuple[Any, ...]) -> ServerConnection | None:
    """``(handle, close, (socket, address))`` when *func(*args)* is a server's connection task.

    A gevent server spawns ``wrapper(handle, close, (socket, address))`` for each
    connection, where *close* is the server's own ``do_close``. That shape is matched
    here rather than the wrapper's private name, and ``tests/serving`` checks it against
    gevent's real servers, so a gevent that changes it fails there, not in production.
    """
    if len(args) != 3 or not isinstance(args[2], tuple):
        return None
    handle, close, conn_args = args
    if not callable(handle) or not isinstance(getattr(close, "__self__", None), BaseServer):
        return None
    return handle, close, conn_args


def _answer_for(func: Callable[..., Any], args: tuple[Any, ...]) -> Answer | None:
    connection = server_connection(func, args)
    if connection is None:
        return None
    return partial(turn_away, connection)


def turn_away(connection: ServerConnection, on_reject: Callable[..., Any] | None, hub: Any) -> None:
    """Answer or close a connection the pool has no slot for. Runs in the caller
    (usually the hub, in the server's accept callback), so it never blocks."""
    _handle, close, conn_args = connection
    if on_reject is not None:
        try:
            on_reject(*conn_args)
        except Exception as exc:  # noqa: BLE001 - reported; the accept loop must go on
            hub.handle_error(on_reject, type(exc), exc, exc.__traceback__)
        finally:
            close(*conn_args)
    else:
        server = getattr(close, "__self__", None)
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


install_answerer(_answer_for)
