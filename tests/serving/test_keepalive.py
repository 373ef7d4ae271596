"""gpool.wsgi.WSGIServer: idle keep-alive connections give way to new clients; drain."""

from __future__ import annotations

from typing import Any, Callable

import gevent
import pytest
from gevent import socket
from gevent.event import Event
from gevent.pywsgi import WSGIServer as GeventWSGIServer

import gpool
from gpool import WorkerPool
from gpool.wsgi import WSGIServer

from ..helpers import connect, running, wait_until

KEEP_ALIVE_GET = b"GET /%s HTTP/1.1\r\nHost: test\r\n\r\n"
# reclaim_idle_after for tests that wait for a connection to count as idle.
QUIET = 0.05


class App:
    """/slow waits until released; every other path answers its own name at once."""

    def __init__(self) -> None:
        self.release = Event()
        self.entered = Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"].encode()
        if path == b"/slow":
            self.entered.set()
            self.release.wait()
        body = b"body of " + path
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


def read_response(sock: Any) -> tuple[bytes, bytes]:
    """One HTTP response with a Content-Length: (head, body). b"", b"" on end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            assert not data, f"connection closed mid-response: {data!r}"
            return b"", b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


def request(sock: Any, path: str) -> tuple[bytes, bytes]:
    sock.sendall(KEEP_ALIVE_GET % path.encode())
    return read_response(sock)


def plain_connect(server: Any) -> Any:
    return connect(server, timeout=5)


def keep_alive_clients(server: Any, count: int, open_connection: Callable[[Any], Any] = plain_connect) -> list[Any]:
    """*count* clients, each with one request served, now idle on their connection."""
    clients: list[Any] = []
    try:
        for n in range(count):
            clients.append(open_connection(server))
            head, _body = request(clients[-1], f"idle{n}")
            assert head.startswith(b"HTTP/1.1 200"), head
    except BaseException:
        for sock in clients:
            sock.close()
        raise
    return clients


def check_reclamation_spares_a_request_in_progress(
    server: Any, app: App, open_connection: Callable[[Any], Any] = plain_connect
) -> None:
    """On a full pool of 3: one request in flight, one client half-way through its next
    request, one idle. A newcomer is served by closing the idle one only."""
    partial, idle = keep_alive_clients(server, 2, open_connection)  # partial is the older one
    slow = open_connection(server)
    try:
        slow.sendall(KEEP_ALIVE_GET % b"slow")
        assert app.entered.wait(5)
        # The older client has begun its next request: half of it is received.
        partial.sendall(b"GET /second HTTP/1.1\r\nHost: te")
        # Reading those bytes takes the connection off the idle list.
        wait_until(lambda: len(server.idle_connections) == 1, what="partial request read")
        with open_connection(server) as newcomer:
            assert request(newcomer, "new")[1] == b"body of /new"
        # Only the truly idle connection was closed.
        assert read_response(idle) == (b"", b"")
        partial.sendall(b"st\r\n\r\n")
        assert read_response(partial)[1] == b"body of /second"
        app.release.set()
        assert read_response(slow)[1] == b"body of /slow"
        assert server.idle_connections.reclaimed == 1
    finally:
        for sock in (partial, idle, slow):
            sock.close()


def test_idle_keep_alive_clients_give_their_slot_to_a_new_client(baseline: None) -> None:
    app = App()
    pool = WorkerPool(3)
    with running(WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)) as server:
        idle = keep_alive_clients(server, 3)
        try:
            assert pool.free_count() == 0
            # pywsgi has no keep-alive timeout: without reclamation this client would
            # wait for as long as the idle ones stay connected.
            with connect(server, timeout=5) as newcomer:
                _head, body = request(newcomer, "new")
                assert body == b"body of /new"
            # The oldest idle connection was the one closed; the others still work.
            assert read_response(idle[0]) == (b"", b"")
            for n in (1, 2):
                assert request(idle[n], f"again{n}")[1] == f"body of /again{n}".encode()
            assert server.idle_connections.reclaimed == 1
        finally:
            for sock in idle:
                sock.close()


def test_gevents_own_server_keeps_new_clients_waiting(baseline: None) -> None:
    """The problem reclamation solves, shown on gevent's WSGIServer (bounded wait)."""
    pool = WorkerPool(3)
    with running(GeventWSGIServer(("127.0.0.1", 0), App(), spawn=pool, log=None)) as server:
        idle = keep_alive_clients(server, 3)
        try:
            with connect(server, timeout=0.3) as newcomer:
                newcomer.sendall(KEEP_ALIVE_GET % b"new")
                with pytest.raises(OSError):  # timed out: never accepted
                    newcomer.recv(1)
        finally:
            for sock in idle:
                sock.close()


def test_reclamation_never_cuts_a_request_in_progress(baseline: None) -> None:
    app = App()
    pool = WorkerPool(3)
    with running(WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)) as server:
        check_reclamation_spares_a_request_in_progress(server, app)


def test_no_idle_connection_means_the_new_client_waits_its_turn(baseline: None) -> None:
    app = App()
    pool = WorkerPool(1)
    server = WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)
    with running(server), connect(server, timeout=5) as slow, connect(server, timeout=5) as queued:
        slow.sendall(KEEP_ALIVE_GET % b"slow")
        assert app.entered.wait(5)
        queued.sendall(KEEP_ALIVE_GET % b"queued")
        # The server accepted the newcomer and asked the busy connection to make its
        # response the last one; the newcomer waits meanwhile.
        wait_until(lambda: server.idle_connections.asked_to_close == 1, what="close asked")
        queued.settimeout(0.2)
        with pytest.raises(OSError):
            queued.recv(1)
        queued.settimeout(5)
        app.release.set()
        head, body = read_response(slow)
        assert body == b"body of /slow"
        assert b"\r\nConnection: close" in head
        assert read_response(slow) == (b"", b"")
        # The queued client takes its slot; nothing was hung up.
        assert read_response(queued)[1] == b"body of /queued"
        assert server.idle_connections.reclaimed == 0


def test_drain_closes_idle_connections_and_lets_requests_finish(baseline: None) -> None:
    app = App()
    pool = WorkerPool(4)
    server = WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)
    with running(server):
        (idle,) = keep_alive_clients(server, 1)
        slow = connect(server, timeout=5)
        try:
            slow.sendall(KEEP_ALIVE_GET % b"slow")
            assert app.entered.wait(5)
            port = server.server_port
            drained = gevent.spawn(gpool.drain, server, 5)
            # The idle client is let go once idle for reclaim_idle_after, the listener
            # is closed...
            assert read_response(idle) == (b"", b"")
            with socket.socket() as late, pytest.raises(ConnectionRefusedError):
                late.connect(("127.0.0.1", port))
            assert not drained.ready()
            # ...and the request in flight finishes, told the connection ends.
            app.release.set()
            head, body = read_response(slow)
            assert body == b"body of /slow"
            assert b"\r\nConnection: close" in head
            assert read_response(slow) == (b"", b"")
            assert drained.get(timeout=5) is True
            assert pool.stats().tasks_killed == 0
        finally:
            idle.close()
            slow.close()


def test_drain_kills_what_outlasts_the_timeout(baseline: None) -> None:
    app = App()
    pool = WorkerPool(4)
    server = WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)
    with running(server), connect(server, timeout=5) as slow:
        slow.sendall(KEEP_ALIVE_GET % b"slow")
        assert app.entered.wait(5)
        assert gpool.drain(server, timeout=0.1) is False
        # The app was killed after the timeout; pywsgi answers for it.
        head, _ = read_response(slow)
        assert head.startswith(b"HTTP/1.1 500"), head
        assert read_response(slow) == (b"", b"")
        stats = pool.stats()
        assert stats.busy == 0
        assert stats.tasks_started == stats.tasks_completed + stats.tasks_killed


def test_drain_works_with_gevents_pool_too(baseline: None) -> None:
    from gevent.pool import Pool

    app = App()
    server = WSGIServer(("127.0.0.1", 0), app, spawn=Pool(4), log=None, reclaim_idle_after=QUIET)
    with running(server):
        (idle,) = keep_alive_clients(server, 1)
        try:
            assert gpool.drain([server], timeout=5) is True
            assert read_response(idle) == (b"", b"")
        finally:
            idle.close()


def test_with_overflow_reject_an_idle_connection_is_reclaimed_before_anyone_gets_503(baseline: None) -> None:
    app = App()
    pool = WorkerPool(2, overflow="reject")
    with running(WSGIServer(("127.0.0.1", 0), app, spawn=pool, log=None, reclaim_idle_after=QUIET)) as server:
        (idle,) = keep_alive_clients(server, 1)
        slow = connect(server, timeout=5)
        try:
            slow.sendall(KEEP_ALIVE_GET % b"slow")
            assert app.entered.wait(5)
            # Under "reject" a newcomer may wait for an idle connection to have been
            # idle for reclaim_idle_after, not for a request in flight.
            with connect(server, timeout=5) as newcomer:
                head, _ = request(newcomer, "new")
                assert head.startswith(b"HTTP/1.1 200"), head
                assert read_response(idle) == (b"", b"")
                # The newcomer starts its next request: now no connection is idle,
                # and the next client is turned away at once.
                newcomer.sendall(b"GET /next HTTP/1.1\r\n")
                wait_until(lambda: len(server.idle_connections) == 0, what="partial request read")
                with connect(server, timeout=5) as turned_away:
                    head, _ = request(turned_away, "late")
                    assert head.startswith(b"HTTP/1.1 503"), head
                newcomer.sendall(b"Host: test\r\n\r\n")
                assert read_response(newcomer)[1] == b"body of /next"
            app.release.set()
            assert read_response(slow)[1] == b"body of /slow"
            assert (server.idle_connections.reclaimed, pool.stats().rejected) == (1, 1)
        finally:
            idle.close()
            slow.close()
