"""pywsgi on a WorkerPool, with keep-alive reclamation and graceful drain.

``gpool.wsgi.WSGIServer`` is ``gevent.pywsgi.WSGIServer`` with two additions:

- when its pool is full and a new client waits, it closes the idle keep-alive
  connection that has waited longest (one parked for its next request, with nothing
  of that request received), so idle clients cannot starve new ones;
- :func:`gpool.drain` shuts it down gracefully: keep-alive clients get
  ``Connection: close``, idle ones are closed, in-flight requests may finish.

Both work with any pool; with a :class:`~gpool.WorkerPool` built with
``overflow="reject"``, clients that still find no slot get ``503``.
"""

from __future__ import annotations

import io
from typing import Any

from gevent import pywsgi
from gevent.socket import wait_read

from ._idle import IdleConnections, ReclaimingServer

__all__ = ["WSGIHandler", "WSGIServer"]


class WSGIServer(ReclaimingServer, pywsgi.WSGIServer):  # type: ignore[misc]  # gevent ships no stubs
    """``gevent.pywsgi.WSGIServer`` that frees slots held by idle keep-alive clients.

    Takes the same arguments. ``idle_connections`` holds the connections parked
    between requests (and counts those reclaimed). A custom *handler_class* should
    derive from :class:`WSGIHandler` to take part.
    """

    handler_class: Any = None  # set below, once WSGIHandler exists


class WSGIHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, telling its server when it idles between requests."""

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        self._reader: _ConnectionReader | None = None
        self._idle: IdleConnections | None = getattr(server, "idle_connections", None)
        if rfile is None and self._idle is not None:
            # Our own reader over the socket (pywsgi takes it as rfile), so we know
            # whether any byte of a next request has arrived.
            self._reader = _ConnectionReader(sock)
            rfile = io.BufferedReader(self._reader)
        super().__init__(sock, address, server, rfile)
        self._requests = 0

    def read_requestline(self) -> str:
        reader, idle = self._reader, self._idle
        if self._requests and reader is not None and idle is not None and not reader.buffered(self.rfile):
            # A keep-alive wait with nothing of the next request received yet.
            if idle.draining:
                return ""  # end the connection
            reader.park_during_next_read(idle, self)
        self._requests += 1
        line: str = super().read_requestline()
        return line

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        idle = self._idle
        if idle is not None and idle.draining and not any(name.lower() == "connection" for name, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)


WSGIServer.handler_class = WSGIHandler


class _ConnectionReader(io.RawIOBase):
    """A raw reader over a gevent socket that can park its connection while blocked."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._sock = sock
        self._probing = False
        self._park_in: IdleConnections | None = None
        self._park_key: object = None

    def readable(self) -> bool:
        return True

    def buffered(self, rfile: io.BufferedReader) -> bool:
        """True if *rfile* holds unread bytes; never reads the socket."""
        self._probing = True
        try:
            return bool(rfile.peek(1))
        finally:
            self._probing = False

    def park_during_next_read(self, idle: IdleConnections, key: object) -> None:
        self._park_in = idle
        self._park_key = key

    def readinto(self, buffer: Any) -> int | None:
        if self._probing:
            return None  # "would block": peek() reports only what is buffered
        idle = self._park_in
        if idle is None:
            received: int = self._sock.recv_into(buffer)
            return received
        self._park_in = None
        key = self._park_key
        self._park_key = None
        sock = self._sock
        pending = getattr(sock, "pending", None)
        if pending is not None:
            return self._read_tls(sock, pending, idle, key, buffer)
        if not idle.park(key, sock):
            return 0  # draining: end of stream
        try:
            received = sock.recv_into(buffer)
        finally:
            idle.unpark(key)
        return received

    def _read_tls(self, sock: Any, pending: Any, idle: IdleConnections, key: object, buffer: Any) -> int:
        """The keep-alive wait on a TLS socket.

        Idle means nothing of a next request has arrived, and a TLS socket hides two
        kinds of arrival from a peek at the raw socket: bytes already decrypted with an
        earlier record (``pending()``), and the first part of a record, which OpenSSL
        takes off the socket and holds until the rest arrives. So the connection is
        parked only while the socket has nothing to read, never during the TLS read.
        """
        if not pending():
            if not idle.park(key, sock):
                return 0  # draining: end of stream
            try:
                wait_read(sock.fileno(), sock.gettimeout())
            finally:
                idle.unpark(key)
        received: int = sock.recv_into(buffer)
        return received
