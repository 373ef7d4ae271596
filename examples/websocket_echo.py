"""A WebSocket echo server on gpool: gevent-websocket's upgrade, gpool's pool and keep-alive loop.

Needs the ``websocket`` extra. From the repository root, with the virtualenv the
README sets up (``.venv/bin/pip install -e '.[websocket]'``; ``.[test]`` has it too)::

    .venv/bin/python examples/websocket_echo.py --port 8000

``/echo`` is a WebSocket that sends every message back; ``/`` is a plain page (open it
in a browser: it talks to ``/echo``); ``/stats`` is the pool's counters as JSON. To try
it from a terminal, the ``websocket-client`` package (``.venv/bin/pip install
websocket-client``, in ``.[test]`` already) ships ``wsdump``, an interactive client::

    .venv/bin/wsdump ws://127.0.0.1:8000/echo     # type a line, get it back; Ctrl-D ends
    curl http://127.0.0.1:8000/stats             # meanwhile: "detached": 1, "busy": 1

(``busy`` counts the ``/stats`` request itself.) Each upgraded connection detaches from
the pool (``gpool.detach()``): it does not hold one of the ``--size`` slots, and plain
HTTP keep-alive connections are still reclaimed and drained as usual.

Once bound it prints exactly one line, ``listening on HOST:PORT`` (the real port, which
matters with ``--port 0``). Ctrl-C (SIGINT) or SIGTERM drains the server with
``gpool.drain``: plain requests finish, WebSockets get ``--stop-timeout`` seconds and are
then closed; it exits with status 0.

The same ``app`` runs under gunicorn with gpool's WebSocket worker::

    .venv/bin/gunicorn -k gpool.workers.GPoolWebSocketWorker --pythonpath examples websocket_echo:app
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from typing import Any, Callable, Iterable

import gevent
from gevent.event import Event

import gpool
from gpool import WorkerPool
from gpool.websocket import WebSocketHandler
from gpool.wsgi import WSGIServer

# The WSGI callable's signature, spelled out for Python 3.9 (wsgiref.types is 3.11+).
StartResponse = Callable[..., Any]

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>gpool WebSocket echo</title>
<form id="form"><input id="text" value="hello" autofocus> <button>send</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  const ws = new WebSocket(location.href.replace(/^http/, "ws").replace(/\\/?$/, "") + "/echo");
  ws.onopen = () => log("connected");
  ws.onmessage = (event) => log("echo: " + event.data);
  ws.onclose = () => log("closed");
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    ws.send(document.getElementById("text").value);
  };
</script>
"""


def echo(ws: Any) -> None:
    """Send each message back as it came (text or binary) until the client closes."""
    while True:
        message = ws.receive()
        if message is None:  # the client closed (or the connection dropped)
            return
        ws.send(message, binary=isinstance(message, (bytes, bytearray)))


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO") or "/"
    ws = environ.get("wsgi.websocket")  # set by the handler once it has upgraded
    if path == "/echo":
        if ws is None:
            body = b"this is a WebSocket endpoint; connect with ws://\n"
            headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Upgrade", "websocket")]
            start_response("426 Upgrade Required", headers)
            return [body]
        echo(ws)
        return []
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
        return [PAGE]
    if path == "/stats":
        pool = gpool.current_pool()  # the WorkerPool running this request, here or under gunicorn
        stats = asdict(pool.stats()) if pool is not None else {}
        body = (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode("utf-8")
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="WebSocket echo on gpool.wsgi.WSGIServer with a WorkerPool.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--size", type=int, default=1000, help="most plain HTTP connections served at once (default: %(default)s)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=2.0,
        help="seconds requests and WebSockets get on shutdown before they are closed (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    pool = WorkerPool(args.size)  # max_detached defaults to size: that many WebSockets at once
    server = WSGIServer(
        (args.host, args.port),
        app,
        spawn=pool,
        handler_class=WebSocketHandler,  # the one line that adds WebSockets
        log=None if args.quiet else "default",
    )

    # Signals only set an event; the main greenlet does the shutdown below.
    stop_requested = Event()
    handlers = [gevent.signal_handler(signum, stop_requested.set) for signum in (signal.SIGINT, signal.SIGTERM)]

    server.start()
    print(f"listening on {server.server_host}:{server.server_port}", flush=True)

    stop_requested.wait()

    # Stop accepting, end idle keep-alive connections, let requests finish; WebSockets
    # (detached tasks) run until the timeout and are then killed.
    gpool.drain(server, timeout=args.stop_timeout)
    pool.close()
    for handler in handlers:
        handler.cancel()
    stats = pool.stats()
    print(f"stopped: {stats.tasks_started} connections served, {stats.tasks_detached} upgraded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
