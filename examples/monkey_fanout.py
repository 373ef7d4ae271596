"""Blocking standard-library code, made concurrent by monkey-patching, on a WorkerPool.

Two HTTP servers run in this one process:

* an "upstream" that waits ``--delay`` seconds (default 0.5) before answering, standing
  in for a slow database or API;
* a "front" server, on a gpool WorkerPool, whose handler calls the upstream with plain
  ``http.client`` (ordinary blocking code, unaware of gevent) and relays the answer.

Then, unless ``--serve-forever`` is given, it fires ``--clients`` requests (default 50)
at the front server all at once, again with ``http.client``, each from its own
greenlet, and reports how long they took. Because ``gevent.monkey.patch_all()`` turned
the blocking sockets and ``time.sleep`` cooperative, the requests wait on the upstream
side by side: the whole batch takes about one delay, not ``clients`` times it. The last
lines are a machine-readable summary and the front pool's stats; the exit status is 0
if every client got the right answer, 1 otherwise.

Run it from the repository root, with the virtualenv the README sets up
(``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``; ``-e .`` is enough
here), or activate it with ``. .venv/bin/activate`` and drop the ``.venv/bin/``
prefix::

    .venv/bin/python examples/monkey_fanout.py --clients 100 --delay 0.25
    .venv/bin/python examples/monkey_fanout.py --serve-forever --port 8000   # then: curl '127.0.0.1:8000/?n=7'

With ``--serve-forever`` it prints ``listening on HOST:PORT`` for the front server and
runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

# Patch first, before anything else imports socket, ssl, threading or time: modules
# imported earlier would keep references to the original, blocking versions.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Iterable  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from gpool import WorkerPool  # noqa: E402

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# No single network call may wait longer than the delay plus this, so the example
# always ends, even if something goes wrong.
IO_SLACK = 10.0


def expected_body(n: str) -> bytes:
    """What the upstream answers to request number *n* (and so what clients expect)."""
    return f"hello #{n}\n".encode()


def make_upstream_app(delay: float) -> WSGIApp:
    """The slow upstream: sleep *delay* seconds, then greet the caller by number."""

    def upstream(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        n = parse_qs(environ.get("QUERY_STRING", "")).get("n", ["?"])[0]
        # time.sleep is patched: only this greenlet sleeps, the server keeps going.
        time.sleep(delay)
        body = expected_body(n)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return upstream


def make_front_app(upstream_host: str, upstream_port: int, timeout: float) -> WSGIApp:
    """The front server: forward the query string to the upstream, relay its answer."""

    def front(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        # Plain, blocking http.client code. Monkey-patched, its socket yields to the
        # hub while waiting, so the other requests keep being served meanwhile.
        conn = http.client.HTTPConnection(upstream_host, upstream_port, timeout=timeout)
        try:
            conn.request("GET", f"/?{query}")
            reply = conn.getresponse()
            body = reply.read()
            status = f"{reply.status} {reply.reason}"
        except OSError as exc:
            body = f"upstream failed: {exc}\n".encode()
            status = "502 Bad Gateway"
        finally:
            conn.close()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return front


def fetch(host: str, port: int, n: int, timeout: float) -> bool:
    """One client: ask the front server for number *n*; True if the answer is right."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/?n={n}")
        reply = conn.getresponse()
        return reply.status == 200 and reply.read() == expected_body(str(n))
    except OSError as exc:
        print(f"client {n}: {exc!r}", file=sys.stderr, flush=True)
        return False
    finally:
        conn.close()


def run_clients(host: str, port: int, clients: int, timeout: float) -> tuple[int, float]:
    """Fire *clients* requests at once; return how many succeeded and the seconds taken."""
    started = time.perf_counter()
    # Each client runs in a greenlet of its own; joinall's timeout bounds the wait.
    greenlets = [gevent.spawn(fetch, host, port, n, timeout) for n in range(clients)]
    gevent.joinall(greenlets, timeout=timeout + IO_SLACK)
    elapsed = time.perf_counter() - started
    ok = sum(1 for g in greenlets if g.successful() and g.value)
    gevent.killall([g for g in greenlets if not g.dead], block=True, timeout=1)
    return ok, elapsed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Monkey-patched fan-out through a gpool WorkerPool.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=0, help="front server port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--delay", type=float, default=0.5, help="upstream delay in seconds (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent client requests (default: %(default)s)")
    parser.add_argument(
        "--size", type=int, default=1000, help="front pool size: most requests served at once (default: %(default)s)"
    )
    parser.add_argument("--serve-forever", action="store_true", help="serve until SIGINT/SIGTERM, no clients")
    args = parser.parse_args(argv)
    if args.delay < 0 or args.clients < 1 or args.size < 1:
        parser.error("--delay must be >= 0, --clients and --size >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timeout = args.delay + IO_SLACK

    # The upstream gets a WorkerPool too (unbounded), but any gevent spawn would do.
    upstream_pool = WorkerPool()
    upstream = WSGIServer((args.host, 0), make_upstream_app(args.delay), spawn=upstream_pool, log=None)
    upstream.start()

    front_pool = WorkerPool(args.size)
    front_app = make_front_app(upstream.server_host, upstream.server_port, timeout)
    front = WSGIServer((args.host, args.port), front_app, spawn=front_pool, log=None, backlog=1024)
    front.start()

    status = 0
    try:
        if args.serve_forever:
            stop_requested = Event()
            handlers = [gevent.signal_handler(s, stop_requested.set) for s in (signal.SIGINT, signal.SIGTERM)]
            print(f"upstream on {upstream.server_host}:{upstream.server_port} (delay {args.delay}s)", flush=True)
            print(f"listening on {front.server_host}:{front.server_port}", flush=True)
            stop_requested.wait()
            for handler in handlers:
                handler.cancel()
        else:
            ok, elapsed = run_clients(front.server_host, front.server_port, args.clients, timeout)
            # The clients have their answers; give the front workers a moment to finish
            # closing their connections so the stats below show a quiet pool.
            front_pool.join(timeout=1)
            serial = args.clients * args.delay
            print(
                f"{ok}/{args.clients} requests through a {args.delay:.3f}s upstream took {elapsed:.3f}s "
                f"({elapsed / args.delay if args.delay else 0:.1f}x the delay; one at a time: {serial:.1f}s)"
            )
            print(f"elapsed={elapsed:.3f} delay={args.delay:.3f} clients={args.clients} ok={ok}")
            print(f"front pool: {front_pool.stats()}", flush=True)
            status = 0 if ok == args.clients else 1
    finally:
        # Stop the front first (it depends on the upstream), each with a bounded wait.
        front.stop(timeout=2)
        upstream.stop(timeout=2)
        front_pool.close()
        upstream_pool.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
