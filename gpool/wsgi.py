"""pywsgi on a WorkerPool: keep-alive reclamation, graceful drain, per-request isolation.

``gpool.wsgi.WSGIServer`` is ``gevent.pywsgi.WSGIServer`` with three additions:

- when its pool is full and a new client waits, it ends a keep-alive connection for
  it without losing a request: one idle for ``reclaim_idle_after`` seconds (default
  1.0) is hung up, else one is closed gracefully (its next response carries
  ``Connection: close``);
- :func:`gpool.drain` shuts it down gracefully: every response from then on carries
  ``Connection: close``, requests already sent are served, idle connections are hung
  up once idle for ``reclaim_idle_after`` seconds;
- each request on a keep-alive connection starts with no ``contextvars`` or
  ``gevent.local`` values left by the one before (off with ``WorkerPool(isolate=False)``).

Reclamation and drain work with any pool; with a :class:`~gpool.WorkerPool` built with
``overflow="reject"``, clients that still find no slot get ``503``.
"""

from __future__ import annotations

import io
from typing import Any

from gevent import pywsgi
from gevent.socket import wait_read

from ._isolation import forget_request_state, isolates_requests
from ._keepalive import Connection, IdleConnections
from ._reclaim import ReclaimingServer

__all__ = ["WSGIHandler", "WSGIServer"]


class WSGIServer(ReclaimingServer, pywsgi.WSGIServer):  # type: ignore[misc]  # gevent ships no stubs
    """``gevent.pywsgi.WSGIServer`` that frees slots held by idle keep-alive clients.

    Takes the same arguments, plus ``reclaim_idle_after`` (seconds a keep-alive
    connection must have waited for its next request before it may be hung up; a
    positive number, default 1.0). ``idle_connections`` holds the server's connections
    and counts those reclaimed. A custom *handler_class* should derive from
    :class:`WSGIHandler` to take part.
    """

    handler_class: Any = None  # set below, once WSGIHandler exists


class WSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, telling its server when it idles between requests.

    Works with any server; only a server with ``idle_connections`` (gpool's) can
    reclaim or drain its connections.
    """

    # Set by pywsgi's handler.
    close_connection: bool
    response_headers: list[tuple[bytes, bytes]]

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        self._reader: _ConnectionReader | None = None
        self._connections: IdleConnections | None = getattr(server, "idle_connections", None)
        self._connection: Connection | None = None
        if self._connections is not None:
            self._connection = self._connections.open(sock)
            if rfile is None:
                # Our own reader over the socket (pywsgi takes it as rfile): its read of
                # the next request is the keep-alive wait, and it knows whether any
                # byte of that request has arrived.
                self._reader = _ConnectionReader(sock)
                rfile = io.BufferedReader(self._reader)
        self._isolate = isolates_requests(getattr(server, "pool", None))
        self._requests = 0
        super().__init__(sock, address, server, rfile)

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self._connection is not None:
                self._connections.close(self._connection)  # type: ignore[union-attr]
                self._connection = None

    def read_requestline(self) -> str:
        if self._requests:
            # Between two requests on one connection.
            if self._isolate:
                forget_request_state()
            reader, connection = self._reader, self._connection
            if reader is not None and connection is not None and not reader.buffered(self.rfile):
                # Nothing of the next request received yet: park during the read.
                reader.park_during_next_read(self._connections, connection)  # type: ignore[arg-type]
        self._requests += 1
        line: str = super().read_requestline()
        return line

    def finalize_headers(self) -> None:
        # Called as the headers go out: the last moment to say this is the last response.
        super().finalize_headers()
        connection = self._connection
        if connection is not None and connection.close_requested and not self.close_connection:
            self.close_connection = True
            self.response_headers = [
                (name, value) for name, value in self.response_headers if name.lower() != b"connection"
            ]
            self.response_headers.append((b"Connection", b"close"))


WSGIServer.handler_class = WSGIHandler


class _ConnectionReader(io.RawIOBase):
    """A raw reader over a gevent socket that can park its connection while blocked."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._sock = sock
        self._probing = False
        self._park_in: IdleConnections | None = None
        self._connection: Connection | None = None
        self._pending = getattr(sock, "pending", None)  # a TLS socket's
        # gevent's socket wraps a non-blocking socket of the standard library.
        self._raw = None if self._pending is not None else getattr(sock, "_sock", None)

    def readable(self) -> bool:
        return True

    def buffered(self, rfile: io.BufferedReader) -> bool:
        """True if *rfile* holds unread bytes; never reads the socket."""
        self._probing = True
        try:
            return bool(rfile.peek(1))
        finally:
            self._probing = False

    def park_during_next_read(self, connections: IdleConnections, connection: Connection) -> None:
        self._park_in = connections
        self._connection = connection

    def readinto(self, buffer: Any) -> int | None:
        if self._probing:
            return None  # "would block": peek() reports only what is buffered
        connections = self._park_in
        if connections is None:
            received: int = self._sock.recv_into(buffer)
            return received
        self._park_in = None
        connection, self._connection = self._connection, None
        sock = self._sock
        pending = self._pending
        if pending is not None:
            return self._read_tls(sock, pending, connections, connection, buffer)
        raw = self._raw
        if raw is not None:
            try:
                # Under load the next request is often here already: then there is no
                # wait to park for (and no gevent wrapper to go through).
                arrived: int = raw.recv_into(buffer)
                return arrived
            except BlockingIOError:
                pass
        connections.park(connection)  # type: ignore[arg-type]
        try:
            received = sock.recv_into(buffer)
        finally:
            connections.unpark(connection)  # type: ignore[arg-type]
        return received

    def _read_tls(self, sock: Any, pending: Any, connections: IdleConnections, connection: Any, buffer: Any) -> int:
        """The keep-alive wait on a TLS socket.

        Idle means nothing of a next request has arrived, and a TLS socket hides two
        kinds of arrival from a peek at the raw socket: bytes already decrypted with an
        earlier record (``pending()``), and the first part of a record, which OpenSSL
        takes off the socket and holds until the rest arrives. So the connection is
        parked only while the socket has nothing to read, never during the TLS read
        (which costs TLS connections one extra wait per request).
        """
        if not pending():
            connections.park(connection)
            try:
                wait_read(sock.fileno(), sock.gettimeout())
            finally:
                connections.unpark(connection)
        received: int = sock.recv_into(buffer)
        return received
