"""WorkerPool behind real gevent servers, with real sockets on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any, Callable

import gevent
import pytest
from gevent import socket
from gevent.event import Event
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from gpool import WorkerPool

from ..helpers import connect, exchange, wait_until

CLIENTS = 300


def echo(sock: Any, _address: Any) -> None:
    with sock.makefile("rb") as reader:
        line = reader.readline()
    sock.sendall(line)


def run_clients(count: int, client: Callable[[int], Any]) -> list[Any]:
    greenlets = [gevent.spawn(client, n) for n in range(count)]
    gevent.joinall(greenlets, timeout=20, raise_error=True)
    assert all(g.ready() for g in greenlets), "some clients never finished"
    return [g.value for g in greenlets]


def test_stream_server_answers_hundreds_of_concurrent_clients(baseline: None) -> None:
    pool = WorkerPool(100)
    server = StreamServer(("127.0.0.1", 0), echo, spawn=pool, backlog=1024)
    server.start()
    try:
        replies = run_clients(CLIENTS, lambda n: exchange(server, b"client %d\n" % n))
    finally:
        server.stop(timeout=5)
    assert replies == [b"client %d\n" % n for n in range(CLIENTS)]
    stats = pool.stats()
    assert stats.tasks_completed == CLIENTS
    assert stats.peak_workers <= 100
    assert stats.workers_started < CLIENTS  # greenlets were reused
    pool.close()
    assert pool.join(timeout=5)


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"hello " + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def http_get(server: Any, path: str) -> bytes:
    request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    return exchange(server, request)


def test_wsgi_server_answers_hundreds_of_concurrent_clients(baseline: None) -> None:
    pool = WorkerPool(100)
    server = WSGIServer(("127.0.0.1", 0), hello_app, spawn=pool, log=None, backlog=1024)
    server.start()
    try:
        replies = run_clients(CLIENTS, lambda n: http_get(server, f"/{n}"))
    finally:
        server.stop(timeout=5)
    for n, reply in enumerate(replies):
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert reply.endswith(b"\r\n\r\nhello /%d" % n)
    assert pool.stats().tasks_completed == CLIENTS
    pool.close()
    assert pool.join(timeout=5)


def test_full_pool_pauses_accepting_and_resumes(baseline: None) -> None:
    pool = WorkerPool(1)
    gate, first_started = Event(), Event()
    started: list[bytes] = []

    def handle(sock: Any, _address: Any) -> None:
        with sock.makefile("rb") as reader:
            line = reader.readline()
        started.append(line)
        if line == b"hold\n":
            first_started.set()
            gate.wait()
        sock.sendall(b"done " + line)

    server = StreamServer(("127.0.0.1", 0), handle, spawn=pool)
    server.start()
    try:
        first = gevent.spawn(exchange, server, b"hold\n")
        assert first_started.wait(timeout=5)
        assert pool.full()
        with connect(server) as second:
            second.sendall(b"wait\n")
            # The connection sits in the listen backlog: nothing handles it yet.
            second.settimeout(0.2)
            with pytest.raises(socket.timeout):
                second.recv(100)
            assert started == [b"hold\n"]
            gate.set()
            assert first.get(timeout=5) == b"done hold\n"
            second.settimeout(5)
            assert second.recv(100) == b"done wait\n"
    finally:
        server.stop(timeout=5)
    assert started == [b"hold\n", b"wait\n"]
    pool.close()


def test_stop_lets_in_flight_requests_finish(baseline: None) -> None:
    pool = WorkerPool(10)
    started, finish = Event(), Event()

    def slow(sock: Any, _address: Any) -> None:
        with sock.makefile("rb") as reader:
            reader.readline()
        started.set()
        finish.wait()
        sock.sendall(b"complete reply")

    server = StreamServer(("127.0.0.1", 0), slow, spawn=pool)
    server.start()
    client = gevent.spawn(exchange, server, b"go\n")
    assert started.wait(timeout=5)
    stopper = gevent.spawn(server.stop, timeout=10)
    gevent.sleep(0)
    assert not stopper.ready()  # stop() is waiting for the request
    finish.set()
    assert client.get(timeout=5) == b"complete reply"
    stopper.get(timeout=5)
    assert pool.stats().tasks_completed == 1
    pool.close()


def test_stop_kills_requests_still_running_after_the_timeout(baseline: None) -> None:
    pool = WorkerPool(10)
    started = Event()
    cleaned: list[str] = []

    def stuck(sock: Any, _address: Any) -> None:
        with sock.makefile("rb") as reader:
            reader.readline()
        started.set()
        try:
            Event().wait()
        finally:
            cleaned.append("finally ran")

    server = StreamServer(("127.0.0.1", 0), stuck, spawn=pool)
    server.start()
    client = gevent.spawn(exchange, server, b"go\n")
    assert started.wait(timeout=5)
    server.stop(timeout=0.1)
    assert cleaned == ["finally ran"]
    assert client.get(timeout=5) == b""  # the server closed the connection
    assert pool.stats().tasks_killed == 1
    assert len(pool) == 0
    pool.close()


def test_one_pool_serves_a_restarted_server(baseline: None) -> None:
    pool = WorkerPool(4)
    for _ in range(2):
        server = StreamServer(("127.0.0.1", 0), echo, spawn=pool)
        server.start()
        try:
            assert exchange(server, b"again\n") == b"again\n"
        finally:
            server.stop(timeout=5)
    assert pool.stats().workers_started == 1
    pool.close()


def test_culled_pool_returns_to_baseline(baseline: None) -> None:
    pool = WorkerPool(50, max_idle=0.05)
    server = StreamServer(("127.0.0.1", 0), echo, spawn=pool)
    server.start()
    try:
        run_clients(50, lambda n: exchange(server, b"x\n"))
    finally:
        server.stop(timeout=5)
    # No close(): the idle workers go by culling alone.
    wait_until(lambda: pool.stats().workers == 0, what="workers culled")


def test_system_exit_in_a_handler_reaches_main_without_upsetting_the_server() -> None:
    # The handler runs inside the server's accept callback (spawn switches straight
    # into it); gevent re-raises a SystemExit in the main greenlet. That must happen
    # after the accept callback has finished, or stopping the server from main leaves
    # gevent's accept loop reading a closed server.
    script = textwrap.dedent(
        """
        import sys, gevent
        from gevent import socket
        from gevent.server import StreamServer
        from gpool import WorkerPool

        def handle(sock, address):
            raise SystemExit("handler says stop")

        pool = WorkerPool(4)
        server = StreamServer(("127.0.0.1", 0), handle, spawn=pool)
        server.start()
        client = socket.socket()
        client.connect(("127.0.0.1", server.server_port))
        try:
            gevent.sleep(5)
            print("no SystemExit reached main")
        except SystemExit as exc:
            print("main got:", exc)
        server.stop(timeout=1)
        gevent.sleep(0.1)
        client.close()
        print(pool.stats().retired, pool.stats().tasks_failed)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main got: handler says stop", "1 1"]
    assert "AttributeError" not in done.stderr, done.stderr
