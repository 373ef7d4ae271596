"""The WSGI app tests/serving/test_nginx.py serves through gunicorn (and nginx).

- ``POST`` (any path): reads the whole body and answers its length in bytes, as
  ``"<length>\\n"``;
- any other method: ``ok\\n``.

Every response has a Content-Length, so keep-alive holds on both gunicorn worker
flavours. On import the module writes ``LOADED_MARK`` and the process id to stderr,
which gunicorn's master log collects: gunicorn loads the app in a worker after the
worker has installed its signal handlers, so once the line is there the worker can
be told to stop without the signal being lost.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable

LOADED_MARK = "nginx_echo: app loaded in worker"

print(f"{LOADED_MARK} {os.getpid()}", file=sys.stderr, flush=True)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "POST":
        length = len(environ["wsgi.input"].read())
        body = f"{length}\n".encode()
    else:
        body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
