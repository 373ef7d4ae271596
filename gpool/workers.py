"""gunicorn worker classes that serve every connection on a reused greenlet.

Two classes, matching gunicorn's own gevent workers, each running one
:class:`~gpool.WorkerPool` per listening socket instead of a ``gevent.pool.Pool``::

    gunicorn -k gpool.workers.GPoolWorker app:app         # like -k gevent
    gunicorn -k gpool.workers.GPoolPyWSGIWorker app:app   # like -k gevent_pywsgi
    gunicorn -k gpool.workers.GPoolWebSocketWorker app:app  # pywsgi + gevent-websocket

``GPoolWorker`` parses requests with gunicorn's HTTP parser on a ``StreamServer``;
``GPoolPyWSGIWorker`` runs gevent's ``pywsgi`` (:class:`gpool.wsgi.WSGIServer`).
Both need ``pip install 'gpool[gunicorn]'``.

Settings
--------

gunicorn's ``worker_connections`` (``--worker-connections``, default 1000) is the pool's
``size``. The other pool options come from environment variables, set in the shell or
with gunicorn's own ``--env NAME=VALUE`` (``raw_env`` in a config file); ``--env`` wins.
Unset or empty means the default. Booleans take ``1``/``0`` (also ``true``/``false``,
``yes``/``no``, ``on``/``off``). ``gpool serve --workers N`` sets every one of them from
its flags (``--max-idle`` for ``GPOOL_MAX_IDLE``, and so on), so the shell's values do
not reach its workers.

- ``GPOOL_MAX_IDLE``: ``max_idle``, seconds a worker greenlet may idle before it is
  retired; a number > 0, default 10.
- ``GPOOL_MIN_IDLE``: ``min_idle``, idle worker greenlets kept however long they idle;
  an int from 0 to ``worker_connections``, default 0.
- ``GPOOL_MAX_TASKS_PER_WORKER``: ``max_tasks_per_worker``, retire a worker greenlet
  after this many tasks (connections) and start a fresh one; an int >= 1, default never.
- ``GPOOL_ISOLATE``: ``isolate``, ``1`` or ``0``; each task, and each request on a
  keep-alive connection, starts with no ``contextvars`` or ``threading.local`` values
  left by the one before; default 1.
- ``GPOOL_LOG_ALL_ERRORS``: ``log_all_errors``, ``1`` or ``0``; also log network errors
  that only mean the client went away (broken pipe, reset, timeout), which otherwise go
  to the ``gpool`` logger at DEBUG; default 0.
- ``GPOOL_OVERFLOW``: ``overflow``, ``backlog`` (default: clients wait in the listen
  queue while the pool is full) or ``reject`` (they get ``503`` at once).
- ``GPOOL_MAX_DETACHED``: ``max_detached``, most requests detached with
  :func:`gpool.detach`; an int >= 0, default ``worker_connections``.
- ``GPOOL_SOFT_DEADLINE``: ``soft_deadline``, seconds a request may run before its
  stack is logged (WARNING) to show where it is stuck; default off.
- ``GPOOL_HARD_DEADLINE``: ``hard_deadline``, seconds a request may run before it is
  killed (the client's connection is closed) and its worker greenlet retired; default
  off. Unlike gunicorn's ``--timeout``, which restarts a whole worker process that
  stops answering the master, this ends one stuck request and spares the others.
- ``GPOOL_RECLAIM_IDLE_AFTER``: the server's ``reclaim_idle_after``, seconds a
  keep-alive connection must have waited for its next request before it may be hung
  up (for a waiting client, or by a drain); default 1.0.

A bad value stops gunicorn before any worker boots: the master exits (status 3) after
one error line naming the variable, the value and what is allowed.

Behaviour
---------

- When the pool is full and a client waits, the worker accepts it, then ends one
  keep-alive connection for it: one idle for ``GPOOL_RECLAIM_IDLE_AFTER`` seconds is
  hung up, else one is told ``Connection: close`` with its next response. A request
  in progress, or one that has partly arrived, is never cut.
- ``overflow=reject``: a client that still finds no slot gets ``503 Service
  Unavailable`` with ``Retry-After`` (over TLS, ``GPoolWorker`` just closes it).
- SIGTERM (and a worker restart: HUP, ``max_requests``): graceful drain with
  :func:`gpool.drain`: stop accepting; every response from then on carries
  ``Connection: close`` (requests already sent are served); idle connections are hung
  up once idle for ``GPOOL_RECLAIM_IDLE_AFTER``; requests in flight finish for up to
  ``graceful_timeout`` seconds, then the rest are killed.
- SIGQUIT and SIGINT: gunicorn's fast exit; requests in flight are cut.
- Once a worker serves, it reads each gunicorn setting once and keeps it (gunicorn
  looks about 20 up by name on every request); ``worker.cfg.set()`` still works.
  ``GPoolPyWSGIWorker`` parses request headers as :mod:`gpool.wsgi` does.
- Messages of the ``gpool`` logger go to gunicorn's error log, unless logging is
  configured for it already.

Importing this module creates no gevent object: gunicorn imports the worker class in
the master, before it forks.
"""

from ._serving.workers import (
    GPoolPyWSGIHandler,
    GPoolPyWSGIServer,
    GPoolPyWSGIWorker,
    GPoolWebSocketWorker,
    GPoolWorker,
)

__all__ = ["GPoolPyWSGIHandler", "GPoolPyWSGIServer", "GPoolPyWSGIWorker", "GPoolWebSocketWorker", "GPoolWorker"]
