"""gpool: a greenlet-reusing worker pool for gevent servers.

Pass a :class:`WorkerPool` as ``spawn=`` to ``gevent.server.StreamServer`` or
``gevent.pywsgi.WSGIServer`` and each connection is served on a greenlet that already
exists, instead of a new one per connection.
"""

from ._core.errors import DeadlineExceeded, PoolClosed, PoolError, PoolFull
from ._core.pool import WorkerPool, current_pool, detach
from ._core.stats import PoolStats
from ._serving.drain import drain

__all__ = [
    "DeadlineExceeded",
    "PoolClosed",
    "PoolError",
    "PoolFull",
    "PoolStats",
    "WorkerPool",
    "__version__",
    "current_pool",
    "detach",
    "drain",
]

__version__ = "0.1.0"
