"""The app ``gpool serve`` runs when given none: a greeting, the pool's stats, metrics.

- ``/``: a short text/plain greeting;
- ``/stats``: the serving pool's :class:`~gpool.PoolStats` as JSON, plus the pid;
- ``/metrics``: the same in Prometheus' text format, through
  :class:`gpool.metrics.PoolCollector` (``501`` without ``gpool[prometheus]``).

A plain WSGI callable: it finds its pool with :func:`gpool.current_pool`, so it
reports on whichever pool serves it, in ``gpool serve`` as in a gunicorn worker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Callable, Iterable

from .._core.pool import WorkerPool, current_pool

__all__ = ["DEMO_APP", "app"]

# What gpool serve loads when given no MODULE:APP, one process or many.
DEMO_APP = f"{__name__}:app"

StartResponse = Callable[..., Any]
_Reply = tuple[str, str, bytes]

_TEXT = "text/plain; charset=utf-8"
_GREETING = b"Hello from gpool: this request ran on a reused worker greenlet. See /stats and /metrics.\n"
_NO_POOL = b"Not served by a gpool WorkerPool: there are no stats to show.\n"
_NO_PROMETHEUS = b"/metrics needs prometheus_client: pip install 'gpool[prometheus]'\n"


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The demo WSGI application."""
    method = environ["REQUEST_METHOD"]
    route = _ROUTES.get(environ.get("PATH_INFO") or "/")
    if route is None:
        status, content_type, body = "404 Not Found", _TEXT, b"Not found. Try /, /stats or /metrics.\n"
    elif method not in ("GET", "HEAD"):
        status, content_type, body = "405 Method Not Allowed", _TEXT, b"Only GET and HEAD are allowed here.\n"
    else:
        status, content_type, body = route(environ)
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if status.startswith("405"):
        headers.append(("Allow", "GET, HEAD"))
    start_response(status, headers)
    # pywsgi sends whatever the app returns, even to HEAD: the head alone is the answer.
    return [] if method == "HEAD" else [body]


def _greeting(_environ: dict[str, Any]) -> _Reply:
    return "200 OK", _TEXT, _GREETING


def _stats(_environ: dict[str, Any]) -> _Reply:
    pool = current_pool()
    if pool is None:
        return "500 Internal Server Error", _TEXT, _NO_POOL
    # The request asking is itself one of the busy tasks counted here.
    report: dict[str, Any] = asdict(pool.stats())
    report["pid"] = os.getpid()
    body = json.dumps(report, indent=2, sort_keys=True) + "\n"
    return "200 OK", "application/json", body.encode("utf-8")


def _metrics(environ: dict[str, Any]) -> _Reply:
    pool = current_pool()
    if pool is None:
        return "500 Internal Server Error", _TEXT, _NO_POOL
    try:
        # Imported here, not at the top: prometheus_client is an optional extra, and
        # the rest of the demo must work without it.
        from prometheus_client.exposition import choose_encoder
    except ImportError:
        return "501 Not Implemented", _TEXT, _NO_PROMETHEUS
    encode, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
    return "200 OK", content_type, encode(_registry_for(pool))


def _registry_for(pool: WorkerPool) -> Any:
    """A private registry holding only *pool*'s collector.

    Built per scrape (a few objects) rather than cached: the demo may be served by
    any pool, and a cache keyed by pool would keep dropped pools alive.
    """
    from prometheus_client import CollectorRegistry

    from .._serving.metrics import PoolCollector

    registry = CollectorRegistry()
    registry.register(PoolCollector(pool))
    return registry


_ROUTES: dict[str, Callable[[dict[str, Any]], _Reply]] = {"/": _greeting, "/stats": _stats, "/metrics": _metrics}
