"""The WSGI app of tests/serving/test_differential.py and tests/serving/test_keepalive_loop.py.

Served the same way by gunicorn (``--pythonpath tests/apps keepalive_probe:app``), by
in-process servers, and by ``patched_server.py`` in a monkey-patched subprocess.
Every answer is a pure function of the request, so that two servers given the same
bytes can be compared byte for byte.

- ``/echo``: reads the whole body and answers it back;
- ``/ignore``: answers without reading the body;
- ``/whoami``: JSON ``{"pid"}`` of the process serving;
- ``/stream?release=PATH&stopping=1``: answers a first chunk at once (no
  Content-Length, so the response streams), then waits, up to 20 s, until the file
  PATH exists (if given) and until the gunicorn worker serving it is shutting down
  (if ``stopping=1``), then sends the rest;
- ``/hold?release=PATH``: touches ``PATH.entered``, then waits (up to 20 s) for PATH
  to exist *before* calling ``start_response``: the headers are not sent meanwhile;
- ``/headers``: JSON of the request's ``HTTP_*`` and ``CONTENT_*`` environ entries;
- ``/state?n=N``: JSON of what this request sees in a ContextVar, in a module-level
  ``threading.local()`` and in a ``gevent.local.local()`` (and whether
  ``threading.local`` is gevent's, i.e. patched), then sets all three to N;
- anything else: ``path <PATH_INFO>`` with a Content-Length.
"""

from __future__ import annotations

import contextvars
import gc
import json
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

import gevent
import gevent.local

LIMIT = 20.0
_POLL = 0.01
STREAM_FIRST = b"first\n"
STREAM_REST = b"rest\n" * 200

# Created when this module is imported: after monkey-patching where the server
# patches (gunicorn's gevent workers, patched_server.py), so then it is gevent's local.
_THREAD_STATE = threading.local()
_GREENLET_STATE = gevent.local.local()
_CONTEXT_STATE: contextvars.ContextVar[Any] = contextvars.ContextVar("keepalive_probe_state")

_worker_ref: list[Any] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/echo":
        body = environ["wsgi.input"].read()
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
        return _answer(start_response, body, headers)
    if path == "/ignore":
        return _text(start_response, b"ignored\n")
    if path == "/whoami":
        return _json(start_response, {"pid": os.getpid()})
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(query.get("release", [None])[0], query.get("stopping") == ["1"])
    if path == "/hold":
        release = query["release"][0]
        with open(release + ".entered", "wb"):
            pass
        _wait_for(lambda: os.path.exists(release))
        return _text(start_response, b"held\n")
    if path == "/headers":
        return _json(start_response, {k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))})
    if path == "/state":
        seen = {
            "contextvar": _CONTEXT_STATE.get(None),
            "threading_local": getattr(_THREAD_STATE, "value", None),
            "gevent_local": getattr(_GREENLET_STATE, "value", None),
            "threading_local_is_gevents": threading.local is gevent.local.local,
        }
        n = int(query["n"][0])
        _CONTEXT_STATE.set(n)
        _THREAD_STATE.value = n
        _GREENLET_STATE.value = n
        return _json(start_response, seen)
    return _text(start_response, b"path " + path.encode("latin-1") + b"\n")


def _answer(start_response: Callable[..., Any], body: bytes, headers: list[tuple[str, str]]) -> list[bytes]:
    start_response("200 OK", headers)
    return [body]


def _text(start_response: Callable[..., Any], body: bytes) -> list[bytes]:
    return _answer(start_response, body, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])


def _json(start_response: Callable[..., Any], data: dict[str, Any]) -> list[bytes]:
    body = json.dumps(data, sort_keys=True).encode()
    return _answer(start_response, body, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])


def _wait_for(condition: Callable[[], bool]) -> None:
    with gevent.Timeout(LIMIT, False):
        while not condition():
            gevent.sleep(_POLL)


def _stream(release: str | None, stopping: bool) -> Iterator[bytes]:
    yield STREAM_FIRST
    if release is not None:
        _wait_for(lambda: os.path.exists(release))
    if stopping:
        _wait_for(_worker_stopping)
    yield STREAM_REST


def _worker_stopping() -> bool:
    """True once the gunicorn worker of this process has been told to stop."""
    if not _worker_ref:
        from gunicorn.workers.base import Worker  # type: ignore[import-untyped]  # only under gunicorn

        workers = [obj for obj in gc.get_objects() if isinstance(obj, Worker)]
        assert len(workers) == 1, workers
        _worker_ref.append(weakref.ref(workers[0]))
    worker = _worker_ref[0]()
    return worker is None or not worker.alive
