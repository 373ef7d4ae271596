"""overflow="backlog" and overflow="reject": what a full pool does with a new connection."""

from __future__ import annotations

import logging
from typing import Any, Callable

import gevent
import pytest
from gevent.event import Event
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from gpool import PoolFull, WorkerPool
from gpool import wsgi as gpool_wsgi

from ..helpers import connect, exchange, in_hub, read_all, running

GET = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def blocking_app(release: Event, entered: Event) -> Callable[..., Any]:
    """/slow waits for *release*; anything else answers at once."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            release.wait()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    return app


@pytest.mark.parametrize("server_class", [WSGIServer, gpool_wsgi.WSGIServer], ids=["pywsgi", "gpool.wsgi"])
def test_reject_answers_503_at_once_and_serves_again_when_a_slot_frees(baseline: None, server_class: type) -> None:
    release, entered = Event(), Event()
    pool = WorkerPool(1, overflow="reject")
    server = server_class(("127.0.0.1", 0), blocking_app(release, entered), spawn=pool, log=None)
    with running(server):
        with connect(server) as slow:
            slow.sendall(GET_SLOW)
            assert entered.wait(5)
            # Every slot is busy: the next client is answered now, not queued.
            reply = exchange(server, GET, timeout=5)
            head = reply.split(b"\r\n\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), reply
            assert b"\r\nRetry-After: 1" in head
            assert b"\r\nConnection: close" in head
            assert pool.stats().rejected == 1
            release.set()
            assert read_all(slow).startswith(b"HTTP/1.1 200 OK")
        assert pool.join(5)
        # The slot is free again: served normally.
        assert exchange(server, GET).startswith(b"HTTP/1.1 200 OK")
        stats = pool.stats()
        assert stats.rejected == 1
        assert stats.tasks_started == stats.tasks_completed == 2


def test_backlog_queues_the_next_client_until_a_slot_frees(baseline: None) -> None:
    release, entered = Event(), Event()
    pool = WorkerPool(1)  # overflow="backlog", the default
    server = WSGIServer(("127.0.0.1", 0), blocking_app(release, entered), spawn=pool, log=None)
    with running(server):
        with connect(server) as slow, connect(server) as queued:
            slow.sendall(GET_SLOW)
            assert entered.wait(5)
            queued.sendall(GET)
            queued.settimeout(0.2)
            with pytest.raises(OSError):  # socket.timeout: nobody accepted it yet
                queued.recv(1)
            queued.settimeout(5)
            release.set()
            assert read_all(slow).startswith(b"HTTP/1.1 200 OK")
            assert read_all(queued).startswith(b"HTTP/1.1 200 OK")
        assert pool.stats().rejected == 0


def hold(release: Event, entered: Event) -> Callable[[Any, Any], None]:
    def handle(sock: Any, _address: Any) -> None:
        entered.set()
        release.wait()
        sock.sendall(b"served\n")

    return handle


def test_reject_closes_a_raw_tcp_connection(baseline: None) -> None:
    release, entered = Event(), Event()
    pool = WorkerPool(1, overflow="reject")
    server = StreamServer(("127.0.0.1", 0), hold(release, entered), spawn=pool)
    with running(server), connect(server) as first:
        assert entered.wait(5)
        with connect(server, timeout=5) as second:
            assert read_all(second) == b""  # closed at once, nothing said
        assert pool.stats().rejected == 1
        release.set()
        assert read_all(first) == b"served\n"


def test_on_reject_gets_the_socket_before_it_is_closed(baseline: None) -> None:
    release, entered = Event(), Event()
    seen: list[Any] = []

    def busy(sock: Any, address: Any) -> None:
        seen.append(address)
        sock.send(b"busy, try later\n")

    pool = WorkerPool(1, overflow="reject", on_reject=busy)
    server = StreamServer(("127.0.0.1", 0), hold(release, entered), spawn=pool)
    with running(server), connect(server) as first:
        assert entered.wait(5)
        with connect(server, timeout=5) as second:
            assert read_all(second) == b"busy, try later\n"
            assert seen == [second.getsockname()]
        release.set()
        assert read_all(first) == b"served\n"


def test_failing_on_reject_is_reported_and_the_server_keeps_accepting(
    baseline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, entered = Event(), Event()
    reported: list[BaseException] = []
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "handle_error", lambda context, t, v, tb: reported.append(v))

    def broken(sock: Any, address: Any) -> None:
        raise RuntimeError("on_reject bug")

    pool = WorkerPool(1, overflow="reject", on_reject=broken)
    server = StreamServer(("127.0.0.1", 0), hold(release, entered), spawn=pool)
    with running(server):
        with connect(server) as first:
            assert entered.wait(5)
            with connect(server, timeout=5) as second:
                assert read_all(second) == b""  # still closed
            assert [str(exc) for exc in reported] == ["on_reject bug"]
            release.set()
            assert read_all(first) == b"served\n"
        entered.clear()
        release.set()
        assert exchange(server, b"") == b"served\n"  # accepting as before


def test_reject_pool_lets_servers_accept_while_busy_but_not_when_closed() -> None:
    release = Event()
    pool = WorkerPool(1, overflow="reject")
    pool.spawn(release.wait)
    gevent.sleep(0)
    assert pool.free_count() == 0
    assert not pool.full()  # the server keeps accepting, to turn clients away
    assert not pool.try_spawn(lambda: None)
    # A task that is not a server connection is never dropped: it raises instead.
    with pytest.raises(PoolFull, match="overflow='reject'"):
        in_hub(lambda: pool.spawn(lambda: None))
    with pytest.raises(PoolFull, match="overflow='reject'"):
        pool.spawn(lambda: None)
    assert pool.stats().rejected == 0
    release.set()
    assert pool.join(5)
    pool.close()
    assert pool.full()


def test_rejections_are_logged_once_then_at_most_once_a_minute(
    baseline: None, caplog: pytest.LogCaptureFixture
) -> None:
    release, entered = Event(), Event()
    pool = WorkerPool(1, overflow="reject")
    server = StreamServer(("127.0.0.1", 0), hold(release, entered), spawn=pool)
    with running(server):
        with caplog.at_level(logging.WARNING, logger="gpool"), connect(server) as first:
            assert entered.wait(5)
            for _ in range(3):
                with connect(server, timeout=5) as extra:
                    assert read_all(extra) == b""
            release.set()
            assert read_all(first) == b"served\n"
        warnings = [record for record in caplog.records if record.name == "gpool"]
        assert len(warnings) == 1, warnings
        assert warnings[0].levelno == logging.WARNING
        assert "turned away 1 connection" in warnings[0].getMessage()
        assert pool.stats().rejected == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"overflow": "drop"}, ValueError, "overflow must be 'backlog' or 'reject', got 'drop'"),
        ({"overflow": None}, ValueError, "overflow must be 'backlog' or 'reject', got None"),
        ({"on_reject": "close"}, TypeError, "on_reject must be None or a callable, got 'close' (str)"),
        ({"max_detached": -1}, ValueError, "max_detached must be None or an int >= 0, got -1"),
        ({"max_detached": 1.5}, TypeError, "max_detached must be None or an int >= 0, got 1.5 (float)"),
    ],
)
def test_bad_overload_options_name_the_option(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        WorkerPool(4, **kwargs)
    assert str(info.value) == message


def test_on_reject_gets_a_datagram_and_its_sender_on_a_datagram_server(baseline: None) -> None:
    from gevent.server import DatagramServer

    release, entered = Event(), Event()
    turned_away: list[tuple[Any, Any]] = []
    got_it = Event()

    def handle(data: bytes, address: Any) -> None:
        entered.set()
        release.wait()

    def on_reject(data: Any, address: Any) -> None:
        turned_away.append((data, address))
        got_it.set()

    pool = WorkerPool(1, overflow="reject", on_reject=on_reject)
    server = DatagramServer(("127.0.0.1", 0), handle, spawn=pool)
    with running(server):
        from gevent import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.sendto(b"first", ("127.0.0.1", server.server_port))
            assert entered.wait(5)
            client.sendto(b"second", ("127.0.0.1", server.server_port))
            assert got_it.wait(5)
            assert turned_away == [(b"second", client.getsockname())]
        release.set()
    assert pool.stats().rejected == 1
