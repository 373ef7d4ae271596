"""The implementation of :mod:`gpool.wsgi`; its documentation is there."""

from __future__ import annotations

import io
from typing import Any

from gevent import pywsgi

from .._core.isolation import forget_request_state, isolates_requests
from .headers import read_request_headers
from .keepalive import Connection, IdleConnections, socket_parts
from .reclaim import ReclaimingServer

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

    # gpool's state for the connection is one attribute on the handler, and lives in a
    # slotted object: pywsgi's handler holds 26 attributes while it serves, CPython
    # shares the keys of a class's instance dicts only up to 30, and past that every
    # attribute access of pywsgi's request loop is a dict lookup (five more attributes
    # cost 5,600 instructions a request under callgrind, 2% of a bare app's).
    _connection: _HandlerConnection

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        connections: IdleConnections | None = getattr(server, "idle_connections", None)
        if connections is None:
            connection = _HandlerConnection(sock)  # nothing can reclaim or drain it
        else:
            connection = connections.open(sock, _HandlerConnection)
            connection.connections = connections
            if rfile is None:
                # Our own reader over the socket (pywsgi takes it as rfile): its read of
                # the next request is the keep-alive wait, and it knows whether any
                # byte of that request has arrived.
                connection.reader = _ConnectionReader(sock, connections, connection)
                rfile = io.BufferedReader(connection.reader)
        connection.isolate = isolates_requests(getattr(server, "pool", None))
        connection.handler = self  # a cycle, broken when the connection closes
        self._connection = connection
        if connection.close_requested:
            connection.request_close()
        super().__init__(sock, address, server, rfile)

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            self._leave_idle_connections()
            self._connection.handler = None

    def _leave_idle_connections(self) -> None:
        """Take the connection out of the server's keep-alive bookkeeping: it serves no
        more requests."""
        connection = self._connection
        connections, connection.connections = connection.connections, None
        if connections is not None:
            connections.close(connection)

    def read_requestline(self) -> str:
        connection = self._connection
        if connection.requests:
            # Between two requests on one connection.
            if connection.isolate:
                forget_request_state()
            reader = connection.reader
            if reader is not None:
                reader.read_next_request(self.rfile)
        connection.requests += 1
        line: str = super().read_requestline()
        return line

    def MessageClass(self, fp: Any, *_args: Any) -> Any:
        # pywsgi's parse of the header block, without the email package for plain
        # blocks: 15 µs less a request (see gpool._serving.headers).
        return read_request_headers(fp)

    def _say_connection_close(self) -> None:
        """From the next response whose headers are not sent yet on, say ``Connection:
        close`` and close after it. Runs in the hub."""
        # An instance attribute in front of the class's method: until a close is asked
        # for, responses pay for no check.
        self.finalize_headers = self._finalize_closing_headers

    def _finalize_closing_headers(self) -> None:
        # Called as the headers go out: the last moment to say this is the last response.
        super().finalize_headers()
        if not self.close_connection:
            self.close_connection = True
            self.response_headers = [
                (name, value) for name, value in self.response_headers if name.lower() != b"connection"
            ]
            self.response_headers.append((b"Connection", b"close"))


class _HandlerConnection(Connection):
    """A connection served by a :class:`WSGIHandler`, and what the handler keeps for it."""

    __slots__ = ("connections", "handler", "isolate", "reader", "requests")

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self.connections: IdleConnections | None = None  # the server's, if it has them
        self.handler: WSGIHandler | None = None
        self.reader: _ConnectionReader | None = None
        self.isolate = True  # per-request isolation
        self.requests = 0  # begun on the connection so far

    def request_close(self) -> None:
        super().request_close()
        if self.handler is not None:
            self.handler._say_connection_close()


WSGIServer.handler_class = WSGIHandler


class _ConnectionReader(io.RawIOBase):
    """A raw reader over a gevent socket that can park its connection while blocked."""

    def __init__(self, sock: Any, connections: IdleConnections, connection: Connection) -> None:
        super().__init__()
        self._sock = sock
        self._connections = connections
        self._connection = connection
        self._next_request = False  # set while reading the first bytes of one
        self._raw, self._pending = socket_parts(sock)

    def readable(self) -> bool:
        return True

    def read_next_request(self, rfile: io.BufferedReader) -> None:
        """Have *rfile* (over this reader) hold the first bytes of the connection's next
        request, parking the connection while it waits for them. Does nothing if
        *rfile* holds some already (pipelined)."""
        self._next_request = True
        try:
            rfile.peek(1)  # reads (through readinto) only if nothing is buffered
        finally:
            self._next_request = False

    def readinto(self, buffer: Any) -> int | None:
        if not self._next_request:
            received: int = self._sock.recv_into(buffer)
            return received
        arrived: int = self._connections.receive_next(
            self._connection, self._sock, self._raw, self._pending, "recv_into", buffer
        )
        return arrived
