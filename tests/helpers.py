"""Small tools the tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import gevent
from gevent import socket
from gevent.event import AsyncResult


def in_hub(fn: Callable[[], Any]) -> Any:
    """Run *fn* in the hub, as a server's accept callback runs, and return its result."""
    result: AsyncResult = AsyncResult()

    def callback() -> None:
        try:
            result.set(fn())
        except BaseException as exc:
            result.set_exception(exc)

    gevent.get_hub().loop.run_callback(callback)
    return result.get(timeout=5)


def connect(server: Any, timeout: float = 10.0) -> Any:
    # A numeric address and a plain connect(): create_connection() would resolve the
    # name on gevent's thread pool, whose threads would show up as "leaked" greenlets.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.server_port))
    return sock


def read_all(sock: Any) -> bytes:
    """Everything *sock* receives until the peer ends the stream."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def exchange(server: Any, payload: bytes, timeout: float = 10.0) -> bytes:
    with connect(server, timeout) as sock:
        sock.sendall(payload)
        return read_all(sock)


@contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start *server*; on exit stop it and close its pool, so no worker outlives the test."""
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)
        pool = server.pool
        if pool is not None and hasattr(pool, "close"):
            pool.close()
            pool.join(5)
