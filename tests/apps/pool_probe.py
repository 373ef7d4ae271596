"""The WSGI app tests/serving/test_gunicorn.py serves through gunicorn.

- ``/whoami``: JSON ``{"pid", "greenlet"}``; ``greenlet`` numbers the greenlet running
  the request, the same number for as long as that greenlet object lives (a new
  greenlet at a recycled address gets a new one, unlike ``id()``);
- ``/pool``: JSON of the options of the WorkerPool serving the request;
- ``/hold?release=PATH``: sends a first line at once, then waits (up to 20 s) until
  the file PATH exists, then sends ``HOLD_BODY_LINES`` more lines and ``end``.
"""

from __future__ import annotations

import itertools
import json
import os
import weakref
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

import gevent
from greenlet import getcurrent

from gpool._core.pool import current_pool

HOLD_BODY_LINES = 2000
HOLD_LINE = b"x" * 63 + b"\n"
_HOLD_LIMIT = 20.0
_POLL = 0.01

_serials: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_next_serial = itertools.count(1)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/hold":
        release = parse_qs(environ.get("QUERY_STRING", ""))["release"][0]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _held(release)
    if path == "/whoami":
        current = getcurrent()
        serial = _serials.get(current)
        if serial is None:
            serial = _serials[current] = next(_next_serial)
        return _json(start_response, {"pid": os.getpid(), "greenlet": serial})
    if path == "/pool":
        pool = current_pool()
        assert pool is not None
        options = {
            "size": pool.size,
            "max_idle": pool._max_idle,
            "min_idle": pool._min_idle,
            "overflow": pool._overflow,
            "max_detached": pool._count.max_detached,
        }
        return _json(start_response, options)
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response: Callable[..., Any], data: dict[str, Any]) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _held(release: str) -> Iterator[bytes]:
    yield b"start\n"
    with gevent.Timeout(_HOLD_LIMIT, False):
        while not os.path.exists(release):
            gevent.sleep(_POLL)
    for _ in range(HOLD_BODY_LINES):
        yield HOLD_LINE
    yield b"end\n"
