"""pywsgi on a WorkerPool: keep-alive reclamation, graceful drain, per-request isolation.

``gpool.wsgi.WSGIServer`` is ``gevent.pywsgi.WSGIServer`` with four additions:

- when its pool is full and a new client waits, it ends a keep-alive connection for
  it without losing a request: one idle for ``reclaim_idle_after`` seconds (default
  1.0) is hung up, else one is closed gracefully (its next response carries
  ``Connection: close``);
- :func:`gpool.drain` shuts it down gracefully: every response from then on carries
  ``Connection: close``, requests already sent are served, idle connections are hung
  up once idle for ``reclaim_idle_after`` seconds;
- each request on a keep-alive connection starts with no ``contextvars`` or
  ``gevent.local`` values left by the one before (off with ``WorkerPool(isolate=False)``);
- a request's header block is parsed without the ``email`` package when it is plain
  ASCII ``Name: value`` lines (nearly always): into the same object, 15 µs sooner
  (:mod:`gpool._serving.headers`).

Reclamation and drain work with any pool; with a :class:`~gpool.WorkerPool` built with
``overflow="reject"``, clients that still find no slot get ``503``.
"""

from ._serving.wsgi import WSGIHandler, WSGIServer

__all__ = ["WSGIHandler", "WSGIServer"]
