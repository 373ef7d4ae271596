"""Graceful shutdown of gevent servers, shared by ``gpool serve`` and the gunicorn workers."""

from __future__ import annotations

import logging
import math
from time import monotonic
from typing import Any

from gevent.event import Event

from .._core.validate import check_servers, check_timeout

__all__ = ["drain"]

_log = logging.getLogger("gpool")

# After the graceful timeout, how long killed requests get to run their finally blocks.
_KILL_GRACE = 1.0


def drain(servers: Any, timeout: float | None = 30.0) -> bool:
    """Shut down one server (or an iterable of them) without cutting requests short.

    1. stop accepting: the listening sockets close, new clients are refused;
    2. on servers with ``idle_connections`` (:class:`gpool.wsgi.WSGIServer` and the
       gunicorn workers), every response from now on carries ``Connection: close``:
       requests already sent are served, and idle keep-alive connections may send one
       more; those idle for the server's ``reclaim_idle_after`` seconds are hung up;
    3. in-flight requests, detached ones (WebSockets, streams) included, get up to
       *timeout* seconds to finish (``None``: as long as they take; zero or less: no
       time);
    4. whatever still runs then (including detached streams) is killed.

    Returns True when nothing had to be killed. Blocks the calling greenlet; call it
    from a greenlet, not the hub. Works with gevent's ``Pool`` as well as ``WorkerPool``.
    """
    seconds = check_timeout("timeout", timeout)
    limit = math.inf if seconds is None else seconds
    group = check_servers("servers", servers)
    started = monotonic()
    registries = []
    for server in group:
        server.close()
        idle = getattr(server, "idle_connections", None)
        if idle is not None:
            idle.drain()
            registries.append(idle)
    pools: list[Any] = []
    for server in group:
        if server.pool is not None and all(server.pool is not pool for pool in pools):
            pools.append(server.pool)
    killed_before = [_killed(pool) for pool in pools]
    deadline = started + limit
    for pool in pools:
        pool.join(timeout=max(deadline - monotonic(), 0.0))
    for pool in pools:
        _wait_detached(pool, deadline)
    running = [_running(pool) for pool in pools]
    leftover = sum(running)
    if leftover:
        _log.warning("graceful timeout (%.1f s): killing %d unfinished task(s)", limit, leftover)
        for pool in pools:
            pool.kill(block=True, timeout=_KILL_GRACE)
    # Counted by the pools where they count kills: a kill from elsewhere meanwhile (a
    # second Ctrl-C in gpool serve) ends tasks this drain did not have to kill itself.
    killed = 0
    for pool, before, unfinished in zip(pools, killed_before, running):
        after = _killed(pool)
        killed += unfinished if before is None or after is None else after - before
    _log.info(
        "drained in %.2f s (%d idle keep-alive connection(s) closed, %d task(s) killed)",
        monotonic() - started,
        sum(idle.drained for idle in registries),
        killed,
    )
    return leftover == 0 and killed == 0


def _wait_detached(pool: Any, deadline: float) -> None:
    """Give *pool*'s detached tasks (WebSockets, streams) until *deadline* to end too:
    ``join()`` returns without them. Only a WorkerPool has them."""
    watchers = getattr(pool, "_watchers", None)
    if watchers is None or not _running(pool):
        return
    done = Event()

    def watch(_worker: Any, _task_no: int, _exc: BaseException | None) -> None:
        # Called as each task ends, after the pool has counted it.
        if not _running(pool):
            done.set()

    remaining = deadline - monotonic()
    watchers.append(watch)
    try:
        done.wait(None if remaining == math.inf else max(remaining, 0.0))
    finally:
        watchers.remove(watch)


def _killed(pool: Any) -> int | None:
    """Tasks *pool* has counted as killed so far; None for a pool that does not count."""
    stats = getattr(pool, "stats", None)
    return None if stats is None else int(stats().tasks_killed)


def _running(pool: Any) -> int:
    stats = getattr(pool, "stats", None)
    if stats is not None:
        snapshot = stats()
        return int(snapshot.busy + snapshot.detached)
    return len(pool)
