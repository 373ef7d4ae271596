"""A plain WSGI application served by gevent's pywsgi on a gpool WorkerPool.

Run it from the repository root, with the virtualenv the README sets up
(``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``; ``-e .`` is enough
here), or activate it with ``. .venv/bin/activate`` and drop the ``.venv/bin/``
prefix::

    .venv/bin/python examples/wsgi_app.py --port 8000

then::

    curl http://127.0.0.1:8000/         # a short greeting
    curl http://127.0.0.1:8000/stats    # the pool's counters, as JSON

Each connection (and every keep-alive request on it) is handled on a worker greenlet
that the pool reuses, so ``tasks_completed`` in ``/stats`` grows with every connection
while ``workers_started`` stays small. Stop it with Ctrl-C (SIGINT) or SIGTERM; it
exits with status 0.

Once bound it prints exactly one line, ``listening on HOST:PORT`` (the real port, which
matters with ``--port 0``). Access-log lines go to stderr unless ``--quiet`` is given.
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
from gevent.pywsgi import WSGIServer

from gpool import WorkerPool

# The WSGI callable's signature, spelled out for Python 3.9 (wsgiref.types is 3.11+).
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def make_app(pool: WorkerPool) -> WSGIApp:
    """Build the WSGI application; it needs *pool* to report on it at ``/stats``."""

    def respond(start_response: StartResponse, status: str, body: bytes, content_type: str) -> list[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO") or "/"

        if path not in ("/", "/stats"):
            return respond(start_response, "404 Not Found", b"not found\n", "text/plain; charset=utf-8")
        if method not in ("GET", "HEAD"):
            return respond(start_response, "405 Method Not Allowed", b"GET only\n", "text/plain; charset=utf-8")

        if path == "/":
            body = b"Hello from a reused gpool worker greenlet.\n"
            return respond(start_response, "200 OK", body, "text/plain; charset=utf-8")

        # PoolStats is a frozen dataclass, so asdict() turns it into plain JSON types.
        # Note the request being answered is itself counted as busy right now.
        stats = asdict(pool.stats())
        body = (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode("utf-8")
        return respond(start_response, "200 OK", body, "application/json")

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="WSGI app on gevent.pywsgi with a gpool WorkerPool.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--size", type=int, default=1000, help="most connections served at once (default: %(default)s)")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=2.0,
        help="seconds in-flight requests get to finish on shutdown (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    pool = WorkerPool(args.size)
    server = WSGIServer(
        (args.host, args.port),
        make_app(pool),
        spawn=pool,  # WSGIServer takes the pool's spawn() for every accepted connection
        log=None if args.quiet else "default",
    )

    # Signals only set an event; the main greenlet does the shutdown below.
    stop_requested = Event()
    handlers = [gevent.signal_handler(signum, stop_requested.set) for signum in (signal.SIGINT, signal.SIGTERM)]

    server.start()
    print(f"listening on {server.server_host}:{server.server_port}", flush=True)

    stop_requested.wait()

    # Stop accepting, let in-flight requests finish for up to --stop-timeout seconds,
    # then close what is left (idle keep-alive connections included).
    server.stop(timeout=args.stop_timeout)
    pool.close()
    for handler in handlers:
        handler.cancel()
    print(f"stopped: {pool.stats().tasks_started} connections served", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
