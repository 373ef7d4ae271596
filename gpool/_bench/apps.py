"""The WSGI applications the HTTP-server scenarios serve, importable by gunicorn, and
the client side of their isolation probe.

gunicorn loads them by module path, ``gpool._bench.apps:create_app('flask')``, so they
live in a module of their own that imports nothing of the benchmark's harness.
"""

from __future__ import annotations

import http.client
import itertools
from typing import Any, Callable

__all__ = ["APPS", "BODY", "PROBE_PATH", "create_app", "http_get", "state_leaks"]

BODY = b"Hello, World!\n"
PROBE_PATH = "/isolation-probe"
APPS = ("flask", "bare")


def create_app(kind: str = "flask") -> Callable[..., Any]:
    """The WSGI application: ``flask`` (a Flask hello-world) or ``bare`` (a callable).

    ``/`` answers ``Hello, World!`` as text/plain. ``PROBE_PATH`` answers with the
    values a ``ContextVar`` and a ``threading.local`` (gevent's, once patched) held
    when the request started, then sets both to a token of its own: on a second
    request over the same connection anything but ``-`` means the first request's
    state reached it.
    """
    import contextvars
    import threading

    var: contextvars.ContextVar[str] = contextvars.ContextVar("gpool_bench_probe", default="-")
    local = threading.local()
    tokens = itertools.count(1)

    def probe() -> bytes:
        seen = f"contextvar={var.get()} local={getattr(local, 'token', '-')}\n"
        token = f"r{next(tokens)}"
        var.set(token)
        local.token = token
        return seen.encode()

    if kind == "bare":
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

        def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            if environ.get("PATH_INFO") == PROBE_PATH:
                body = probe()
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                return [body]
            start_response("200 OK", headers)
            return [BODY]

        return bare_app
    if kind != "flask":
        raise ValueError(f"app must be one of {', '.join(APPS)}, not {kind!r}")

    from flask import Flask, Response

    app = Flask("gpool_bench")

    @app.route("/")
    def hello() -> Response:
        return Response(BODY, mimetype="text/plain")

    @app.route(PROBE_PATH)
    def isolation_probe() -> Response:
        return Response(probe(), mimetype="text/plain")

    return app


def http_get(
    port: int, path: str = "/", timeout: float = 2.0, conn: http.client.HTTPConnection | None = None
) -> tuple[int, bytes]:
    """GET *path* from 127.0.0.1:*port* (on *conn* when given, left open); status and body."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def state_leaks(port: int, timeout: float = 10.0) -> bool:
    """Whether the second of two requests to ``PROBE_PATH`` on one keep-alive connection
    sees the ContextVar or thread-local value the first one set. Raises RuntimeError
    when the server does not answer them with 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        bodies = []
        for _ in range(2):
            status, body = http_get(port, PROBE_PATH, timeout, conn)
            if status != 200:
                raise RuntimeError(f"isolation probe answered {status}: {body[:200]!r}")
            bodies.append(body.decode())
    finally:
        conn.close()
    return bodies[1].strip() != "contextvar=- local=-"
