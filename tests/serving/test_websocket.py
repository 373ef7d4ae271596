"""WebSockets on gpool: gpool.websocket.WebSocketHandler and gpool.workers.GPoolWebSocketWorker.

Real clients: websocket-client, over a gevent socket for the in-process servers (so the
client yields to the server in the same process) and over a plain socket for the
subprocesses (examples/websocket_echo.py, gunicorn). Waits are events, joins and
bounded socket timeouts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

import gevent
import pytest
from gevent import GreenletExit
from gevent.queue import Queue

pytest.importorskip("geventwebsocket")
websocket = pytest.importorskip("websocket")  # websocket-client

import gpool  # noqa: E402
from gpool import WorkerPool  # noqa: E402
from gpool.websocket import WebSocketHandler  # noqa: E402
from gpool.wsgi import WSGIServer  # noqa: E402

from ..helpers import connect, read_all, running  # noqa: E402
from ..test_examples import IO_TIMEOUT, run_example  # noqa: E402
from .test_gunicorn import TIMEOUT, gunicorn_command, launched, listening_socket  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLAIN = b"plain answer\n"


class EchoApp:
    """Plain requests get PLAIN; WebSockets echo until closed. ``ends`` gets
    "closed" or "killed" as each WebSocket's app returns."""

    def __init__(self) -> None:
        self.ends: Queue = Queue()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(PLAIN)))])
            return [PLAIN]
        try:
            while (message := ws.receive()) is not None:
                ws.send(message, binary=isinstance(message, (bytes, bytearray)))
        except GreenletExit:
            self.ends.put("killed")
            raise
        self.ends.put("closed")
        return []


def make_server(pool: WorkerPool, app: EchoApp, **options: Any) -> WSGIServer:
    return WSGIServer(("127.0.0.1", 0), app, spawn=pool, handler_class=WebSocketHandler, log=None, **options)


def open_ws(server: WSGIServer) -> Any:
    """A websocket-client connection to *server*, over a gevent socket."""
    return websocket.create_connection(
        f"ws://127.0.0.1:{server.server_port}/echo", socket=connect(server), timeout=IO_TIMEOUT
    )


def finish(ws: Any) -> None:
    """Close *ws* and its socket (websocket-client leaves the socket open when the
    server closed first)."""
    sock = ws.sock
    try:
        ws.close(timeout=IO_TIMEOUT)
    finally:
        if sock is not None:
            sock.close()


def echoes(ws: Any, text: str) -> bool:
    ws.send(text)
    return bool(ws.recv() == text)


def assert_closed_by_server(ws: Any) -> None:
    try:
        rest = ws.recv()
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return
    assert rest in ("", b""), rest


def send_get(sock: Any, close: bool = False) -> None:
    extra = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET / HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())


def read_response(sock: Any) -> tuple[bytes, bytes]:
    """The status line and the body of one Content-Length response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection ended after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert match, head
    while len(body) < int(match[1]):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head.split(b"\r\n", 1)[0], body


def keepalive_client(server: WSGIServer) -> Any:
    """A connection that made one keep-alive request and stays open."""
    sock = connect(server)
    send_get(sock)
    assert read_response(sock) == (b"HTTP/1.1 200 OK", PLAIN)
    return sock


def plain_get(server: WSGIServer) -> tuple[bytes, bytes]:
    with connect(server) as sock:
        send_get(sock, close=True)
        return read_response(sock)


# -- gpool.wsgi.WSGIServer with gpool.websocket.WebSocketHandler -------------------------


def test_handler_combines_gpool_and_gevent_websocket() -> None:
    from geventwebsocket.handler import WebSocketHandler as Upgrading

    from gpool.wsgi import WSGIHandler

    for name in ("__init__", "handle", "read_requestline", "_say_connection_close"):
        assert getattr(WebSocketHandler, name) is getattr(WSGIHandler, name), name
    for name in ("run_application", "upgrade_websocket", "start_response"):
        assert getattr(WebSocketHandler, name) is getattr(Upgrading, name), name


def test_echo_and_plain_requests(baseline: None) -> None:
    app = EchoApp()
    with running(make_server(WorkerPool(2), app)) as server:
        ws = open_ws(server)
        assert echoes(ws, "hello")
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
        assert plain_get(server) == (b"HTTP/1.1 200 OK", PLAIN)
        finish(ws)
        assert app.ends.get(timeout=IO_TIMEOUT) == "closed"


def test_websockets_detach_and_leave_the_keepalive_bookkeeping(baseline: None) -> None:
    app = EchoApp()
    pool = WorkerPool(2)
    with running(make_server(pool, app)) as server:
        sockets = [open_ws(server) for _ in range(2)]
        for ws in sockets:
            assert echoes(ws, "up")  # upgraded, so detached already
        stats = pool.stats()
        assert (pool.free_count(), stats.detached, stats.busy) == (2, 2, 0)
        # Neither parked nor open as far as reclamation and drains are concerned.
        assert len(server.idle_connections) == 0
        assert not server.idle_connections._open
        assert plain_get(server) == (b"HTTP/1.1 200 OK", PLAIN)
        for ws in sockets:
            finish(ws)
        assert [app.ends.get(timeout=IO_TIMEOUT) for _ in sockets] == ["closed", "closed"]
        assert pool.stats().tasks_detached == 2


@pytest.mark.parametrize("first", ["websocket", "keepalive"])
def test_idle_keepalive_is_still_reclaimed_beside_a_websocket(baseline: None, first: str) -> None:
    app = EchoApp()
    pool = WorkerPool(1)
    with running(make_server(pool, app, reclaim_idle_after=0.05)) as server:
        if first == "websocket":
            ws = open_ws(server)
            assert echoes(ws, "one")
            idle = keepalive_client(server)  # holds the only slot
        else:
            idle = keepalive_client(server)  # holds the only slot
            ws = open_ws(server)  # served once the idle connection is reclaimed
            assert echoes(ws, "one")
        with idle:
            # A newcomer is served: the idle keep-alive connection gives way, not the
            # WebSocket (which holds no slot).
            assert plain_get(server) == (b"HTTP/1.1 200 OK", PLAIN)
            assert read_all(idle) == b""
        assert server.idle_connections.reclaimed == 1
        assert echoes(ws, "still open")
        assert pool.stats().detached == 1
        finish(ws)
        assert app.ends.get(timeout=IO_TIMEOUT) == "closed"


def test_drain_leaves_a_websocket_open_until_the_timeout_then_kills_it(baseline: None) -> None:
    app = EchoApp()
    pool = WorkerPool(2)
    server = make_server(pool, app, reclaim_idle_after=0.05)
    server.start()
    try:
        ws = open_ws(server)
        assert echoes(ws, "before")
        with keepalive_client(server) as idle:
            started = time.monotonic()
            drainer = gevent.spawn(gpool.drain, server, 0.5)
            assert read_all(idle) == b""  # the idle keep-alive client is hung up
        assert echoes(ws, "during the drain")
        assert not drainer.ready()
        assert drainer.get(timeout=IO_TIMEOUT) is False  # something had to be killed
        assert time.monotonic() - started >= 0.5
        assert app.ends.get(timeout=IO_TIMEOUT) == "killed"
        assert_closed_by_server(ws)
        finish(ws)
        assert server.idle_connections.drained == 1
    finally:
        server.stop(timeout=5)
        pool.close()
        pool.join(5)


def test_past_max_detached_a_websocket_keeps_its_slot(baseline: None, caplog: pytest.LogCaptureFixture) -> None:
    app = EchoApp()
    pool = WorkerPool(2, max_detached=0)
    with running(make_server(pool, app)) as server, caplog.at_level(logging.WARNING, logger="gpool"):
        ws = open_ws(server)
        assert echoes(ws, "served all the same")
        stats = pool.stats()
        assert (stats.detached, stats.busy) == (0, 1)
        assert "keeps its pool slot" in caplog.text
        finish(ws)
        assert app.ends.get(timeout=IO_TIMEOUT) == "closed"


def test_on_gevent_pool_nothing_detaches(baseline: None) -> None:
    from gevent.pool import Pool

    app = EchoApp()
    with running(make_server(Pool(2), app)) as server:  # type: ignore[arg-type]
        ws = open_ws(server)
        assert echoes(ws, "gevent's Pool")
        finish(ws)
        assert app.ends.get(timeout=IO_TIMEOUT) == "closed"


# -- without gevent-websocket -----------------------------------------------------------


def test_import_without_gevent_websocket_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "geventwebsocket", None)
    monkeypatch.setitem(sys.modules, "geventwebsocket.handler", None)
    monkeypatch.delitem(sys.modules, "gpool.websocket")
    monkeypatch.delitem(sys.modules, "gpool._serving.websocket")
    with pytest.raises(ImportError, match=re.escape("pip install 'gpool[websocket]'")):
        import gpool.websocket  # noqa: F401


def test_worker_without_gevent_websocket_stops_the_master_with_one_line() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["geventwebsocket"] = None  # as if not installed
        import gpool.workers
        from gunicorn.config import Config

        class Log:
            def error(self, fmt, *args):
                print(fmt % args)

        try:
            gpool.workers.GPoolWebSocketWorker.check_config(Config(), Log())
        except SystemExit as exc:
            print("exit", exc.code)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert len(lines) == 2 and "pip install 'gpool[websocket]'" in lines[0], lines
    assert lines[1] == "exit 3"


# -- examples/websocket_echo.py and gunicorn ---------------------------------------------


def _http(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=IO_TIMEOUT) as reply:
        return reply.status, reply.read()


def test_example_echoes_and_stops(tmp_path: Path) -> None:
    with run_example("websocket_echo", "--port", "0", "--stop-timeout", "0.5", tmp_path=tmp_path) as server:
        server.wait_ready()
        base = f"{server.host}:{server.port}"
        status, page = _http(f"http://{base}/")
        assert status == 200 and b"WebSocket" in page
        ws = websocket.create_connection(f"ws://{base}/echo", timeout=IO_TIMEOUT)
        try:
            assert echoes(ws, "hello example")
            stats = json.loads(_http(f"http://{base}/stats")[1])
            assert (stats["detached"], stats["busy"]) == (1, 1)  # busy: the /stats request
            # Stops with the WebSocket still open: killed at --stop-timeout.
            code, rest = server.stop(signal.SIGTERM)
            assert code == 0, server.stderr_text()
            assert rest == ["stopped: 3 connections served, 1 upgraded"], rest
            assert_closed_by_server(ws)
        finally:
            finish(ws)
        assert '"GET /echo HTTP/1.1" 101' in server.stderr_text()


def test_gunicorn_websocket_worker(tmp_path: Path) -> None:
    listener = listening_socket()
    command = gunicorn_command(
        listener,
        "gpool.workers.GPoolWebSocketWorker",
        "websocket_echo:app",
        "--workers=1",
        "--graceful-timeout=1",
        "--access-logfile=-",
        path=EXAMPLES,
    )
    with launched(command, listener, tmp_path, {}) as master:
        base = f"127.0.0.1:{master.port}"
        ws = websocket.create_connection(f"ws://{base}/echo", timeout=TIMEOUT)
        try:
            assert echoes(ws, "hello gunicorn")
            ws.send_binary(b"\x01\x02")
            assert ws.recv() == b"\x01\x02"
            stats = json.loads(_http(f"http://{base}/stats")[1])
            assert (stats["detached"], stats["busy"]) == (1, 1)
        finally:
            finish(ws)
        # gunicorn's access log has the WebSocket's line once it ends.
        master.wait_for_log('"GET /echo HTTP/1.1" 101')
        # SIGTERM to the worker (as on a reload) with a WebSocket open: it lives until
        # the graceful timeout, then the worker kills it and the master replaces it.
        master.wait_for_log("Worker serving")
        match = re.search(r"Worker serving \(pid: (\d+)\)", master.log())
        assert match, master.log()
        ws = websocket.create_connection(f"ws://{base}/echo", timeout=TIMEOUT)
        try:
            assert echoes(ws, "until the end")
            os.kill(int(match[1]), signal.SIGTERM)
            master.wait_for_log("Worker draining")
            assert echoes(ws, "while draining")
            assert_closed_by_server(ws)
        finally:
            finish(ws)
        master.wait_for_log("graceful timeout (1.0 s): killing 1 unfinished task(s)")
        master.wait_for_log("Worker serving", count=2)
        assert _http(f"http://{base}/")[0] == 200
        master.proc.send_signal(signal.SIGTERM)
        assert master.exit_status() == 0
