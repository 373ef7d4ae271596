"""Per-request isolation on a keep-alive connection.

A keep-alive connection is one pool task, so the pool's per-task isolation leaves one
request's ``contextvars`` values and ``gevent.local`` (patched: ``threading.local``)
values to the next request on that connection; behind a proxy that is another end
user. The server integrations call :func:`forget_request_state` between requests.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent

__all__ = ["forget_request_state", "isolates_requests"]


def isolates_requests(pool: Any) -> bool:
    """Whether requests served on *pool* are isolated: the pool's own ``isolate``
    setting (on for pools that have none, such as gevent's ``Pool``)."""
    return bool(getattr(pool, "isolate", True))


def forget_request_state() -> None:
    """Start the calling greenlet's next request afresh. Never switches.

    The next request runs in a new, empty ``contextvars`` context; on a
    :class:`~gpool.WorkerPool` worker, ``gevent.local`` values are dropped too (a
    ``local`` subclass runs its ``__init__`` again). A plain greenlet's locals are
    freed only when it dies.
    """
    current: Any = getcurrent()
    current.gr_context = None
    if getattr(current, "local_links", None):
        current.forget_locals()
