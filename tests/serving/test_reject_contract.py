"""The shape of a gevent server's connection task, as ``overflow="reject"`` relies on it.

A full reject-mode pool must tell a server's connection (to answer it: a 503, or
*on_reject* then close) from any other task (``PoolFull``). gevent's servers spawn
``wrapper(handle, close, (socket, address))`` with *close* their own ``do_close``;
gpool recognises that shape (``gpool._serving.reject.server_connection``). These tests
pin it on gevent's real servers, so a gevent release that changes it fails here
rather than turning rejected clients into errors in the accept loop.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from gevent import pywsgi, socket
from gevent.event import Event
from gevent.server import StreamServer

from gpool import PoolFull, WorkerPool
from gpool import wsgi as gpool_wsgi
from gpool._serving.reject import server_connection

from ..helpers import connect, read_all, running


class RecordingPool(WorkerPool):
    """A WorkerPool that keeps what servers hand to spawn()."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__(4)
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.calls.append((func, args))
        super().spawn(func, *args, **kwargs)


def echo_once(sock: Any, _address: Any) -> None:
    sock.sendall(sock.recv(100))


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


SERVERS = [
    pytest.param(lambda pool: StreamServer(("127.0.0.1", 0), echo_once, spawn=pool), b"ping", id="StreamServer"),
    pytest.param(
        lambda pool: pywsgi.WSGIServer(("127.0.0.1", 0), hello, spawn=pool, log=None),
        b"GET / HTTP/1.0\r\n\r\n",
        id="pywsgi",
    ),
    pytest.param(
        lambda pool: gpool_wsgi.WSGIServer(("127.0.0.1", 0), hello, spawn=pool, log=None),
        b"GET / HTTP/1.0\r\n\r\n",
        id="gpool.wsgi",
    ),
]


@pytest.mark.parametrize(("make_server", "request_bytes"), SERVERS)
def test_a_real_servers_connection_task_is_recognised(make_server: Any, request_bytes: bytes) -> None:
    pool = RecordingPool()
    with running(make_server(pool)) as server, connect(server) as client:
        client.sendall(request_bytes)
        assert read_all(client)
    assert len(pool.calls) == 1
    func, args = pool.calls[0]
    connection = server_connection(func, args)
    assert connection is not None, f"gevent's server task no longer has the expected shape: {func!r}{args!r}"
    handle, close, (sock, address) = connection
    assert callable(handle)
    assert close == server.do_close
    assert isinstance(sock, socket.socket)
    assert address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    "task",
    [
        pytest.param((print, ()), id="no arguments"),
        pytest.param((print, (print, print, ("a", "b"))), id="close not a server's"),
        pytest.param((print, (1, 2, 3)), id="no connection tuple"),
    ],
)
def test_other_tasks_are_not_taken_for_connections(task: tuple[Any, tuple[Any, ...]]) -> None:
    assert server_connection(*task) is None


def test_a_full_reject_pool_answers_a_real_servers_client_and_refuses_other_tasks() -> None:
    turned_away: list[Any] = []
    pool = WorkerPool(1, overflow="reject", on_reject=lambda sock, address: turned_away.append(address))
    release, holding = Event(), Event()

    def hold(sock: Any, _address: Any) -> None:
        holding.set()
        release.wait(10)

    with running(StreamServer(("127.0.0.1", 0), hold, spawn=pool)) as server:
        first = connect(server)
        assert holding.wait(5)
        with connect(server) as second:
            assert read_all(second) == b""  # on_reject ran, then the server closed it
        assert len(turned_away) == 1 and pool.stats().rejected == 1
        with pytest.raises(PoolFull, match="only a server's connections"):
            pool.spawn(print)
        assert pool.stats().rejected == 1
        release.set()
        first.close()
