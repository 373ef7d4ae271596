"""A Flask application served by gevent's pywsgi on a gpool WorkerPool.

Nothing in the app is specific to gpool except ``/pool``, which reports on the pool
running the request. Three ways to serve it, from the repository root, with the
virtualenv the README sets up (``python3 -m venv .venv && .venv/bin/pip install -e
'.[test]'``, which brings Flask and gunicorn; or activate it with ``. .venv/bin/activate``
and drop the ``.venv/bin/`` prefix)::

    .venv/bin/gpool serve examples.flask_app:app                                 # one process
    .venv/bin/gunicorn -k gpool.workers.GPoolWorker -w 2 examples.flask_app:app  # two processes
    .venv/bin/python examples/flask_app.py --port 8000                           # main() below

then::

    curl http://127.0.0.1:8000/               # a greeting
    curl http://127.0.0.1:8000/hello/Ada      # JSON, from a URL parameter
    curl 'http://127.0.0.1:8000/slow?seconds=0.5'
    curl http://127.0.0.1:8000/pool           # the pool serving this process, as JSON

``/slow`` calls plain ``time.sleep``: all three ways monkey-patch first, so the sleep
only holds up its own request and other clients are served meanwhile (``/pool`` shows
it among the busy tasks). Run as a script, this file prints exactly one line once
bound, ``listening on HOST:PORT`` (the real port, which matters with ``--port 0``),
and on Ctrl-C (SIGINT) or SIGTERM lets in-flight requests finish (``gpool.drain``),
prints ``stopped: N connections served`` and exits with status 0.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Run as a script: patch before Flask (and what it imports) binds socket, threading
    # and time. `gpool serve` and the gunicorn worker patch before they import this module.
    from gevent import monkey

    monkey.patch_all()

import argparse
import os
import signal
import sys
import time
from dataclasses import asdict
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

# current_pool() is how code running in a task finds its pool, whichever server or
# gunicorn worker built it.
from gpool import current_pool

MAX_SLOW_SECONDS = 10.0

app = Flask(__name__)


@app.get("/")
def index() -> ResponseReturnValue:
    return "Hello from Flask, served on a gpool worker greenlet.\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/hello/<name>")
def hello(name: str) -> ResponseReturnValue:
    return jsonify(greeting=f"Hello, {name}!")


@app.get("/slow")
def slow() -> ResponseReturnValue:
    """Stands in for a slow database call: blocking code, cooperative once patched."""
    seconds = request.args.get("seconds", default=0.1, type=float)
    if seconds is None or not 0 <= seconds <= MAX_SLOW_SECONDS:
        return jsonify(error=f"seconds must be between 0 and {MAX_SLOW_SECONDS:g}"), 400
    time.sleep(seconds)
    return jsonify(slept=seconds)


@app.get("/pool")
def pool_info() -> ResponseReturnValue:
    pool = current_pool()
    if pool is None:  # e.g. under `flask run`, which knows nothing of gpool
        return jsonify(error="this request is not running on a gpool WorkerPool"), 503
    # PoolStats is a frozen dataclass; this request counts among the busy tasks.
    return jsonify(pid=os.getpid(), stats=asdict(pool.stats()))


def main(argv: list[str] | None = None) -> int:
    import gevent
    from gevent.event import Event

    from gpool import WorkerPool, drain
    from gpool.wsgi import WSGIServer

    parser = argparse.ArgumentParser(description="The Flask app on gpool.wsgi.WSGIServer with a WorkerPool.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1000, help="most requests served at once (default: %(default)s)")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        help="seconds in-flight requests get to finish on shutdown (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    pool = WorkerPool(args.size)
    server = WSGIServer((args.host, args.port), app, spawn=pool)
    # Signals only set an event; the main greenlet drains below.
    stop = Event()
    handlers: list[Any] = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGINT, signal.SIGTERM)]
    server.start()
    print(f"listening on {server.server_host}:{server.server_port}", flush=True)
    stop.wait()
    drain(server, args.graceful_timeout)
    pool.close()
    for handler in handlers:
        handler.cancel()
    print(f"stopped: {pool.stats().tasks_started} connections served", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
