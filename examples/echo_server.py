"""A raw-TCP echo server whose connections are served by a gpool WorkerPool.

Run it from the repository root, with the virtualenv the README sets up
(``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``; ``-e .`` is enough
here), or activate it with ``. .venv/bin/activate`` and drop the ``.venv/bin/``
prefix::

    .venv/bin/python examples/echo_server.py --port 8000

and talk to it with a client that ships with Python; every byte you send comes
straight back::

    python3 -c "import socket; s = socket.create_connection(('127.0.0.1', 8000)); s.sendall(b'hi\\n'); print(s.recv(9))"

(``curl telnet://127.0.0.1:8000`` works too, interactively: type a line, get it back.)
Stop it with Ctrl-C (SIGINT) or SIGTERM; it stops accepting, gives open connections a
moment to finish, closes the rest and exits with status 0.

Once the listening socket is bound the server prints exactly one line,
``listening on HOST:PORT`` (the real port, which matters with ``--port 0``), so a
script or a test can wait for that line instead of sleeping.

No monkey-patching is needed: the handler uses the gevent socket that StreamServer
passes it, so ``recv`` and ``sendall`` already yield to other connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from gpool import WorkerPool


def echo(sock: Any, address: tuple[Any, ...]) -> None:
    """Handle one connection: send back whatever arrives until the client hangs up.

    *sock* is a gevent socket; StreamServer closes it when this function returns, so
    there is nothing to clean up here. A client that resets the connection raises
    ``ConnectionResetError`` out of this function; the pool counts that as a failed
    task and logs it at DEBUG only (see ``WorkerPool(log_all_errors=...)``).
    """
    while True:
        data = sock.recv(65536)
        if not data:  # orderly shutdown from the client's side
            return
        sock.sendall(data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TCP echo server on a gpool WorkerPool.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--size", type=int, default=1000, help="most connections served at once (default: %(default)s)")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=2.0,
        help="seconds open connections get to finish on shutdown before they are closed (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # One worker greenlet per connection being served, at most --size of them; when
    # every slot is busy the server simply stops accepting until one frees up, and
    # new connections wait in the kernel's listen queue.
    pool = WorkerPool(args.size)
    # A generous listen backlog, so a burst of simultaneous connects is queued by the
    # kernel rather than having SYNs dropped (and retried a second later).
    server = StreamServer((args.host, args.port), echo, spawn=pool, backlog=1024)

    # Signals only set an event; the main greenlet does the actual shutdown. gevent
    # runs each handler in a fresh greenlet, so nothing blocks inside the hub.
    stop_requested = Event()
    handlers = [gevent.signal_handler(signum, stop_requested.set) for signum in (signal.SIGINT, signal.SIGTERM)]

    server.start()  # binds and starts accepting; returns at once
    print(f"listening on {server.server_host}:{server.server_port}", flush=True)

    stop_requested.wait()

    # Close the listening socket, wait up to --stop-timeout seconds for the running
    # handlers, then kill whatever is still running (their sockets get closed).
    server.stop(timeout=args.stop_timeout)
    # The pool is no longer needed: let its idle worker greenlets exit.
    pool.close()
    for handler in handlers:
        handler.cancel()

    stats = pool.stats()
    print(
        f"stopped: {stats.tasks_started} connections served by {stats.workers_started} worker greenlets "
        f"(peak {stats.peak_workers} at once)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
