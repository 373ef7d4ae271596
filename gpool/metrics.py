"""Export a :class:`~gpool.WorkerPool`'s stats to Prometheus.

Needs ``prometheus_client``: ``pip install 'gpool[prometheus]'``. Register a pool on
the default registry and every exposition of that registry (``start_http_server``,
``make_wsgi_app``, ``generate_latest``) includes it::

    from gpool import WorkerPool
    from gpool.metrics import register

    pool = WorkerPool(1000)
    register(pool)  # or register(pool, name="api", registry=my_registry)

Values are read from :meth:`~gpool.WorkerPool.stats` at each scrape, so there is
nothing to update by hand. Every sample carries the label ``pool`` (the *name* given
at registration). With the default namespace ``gpool`` the metric names are:

=================================  =======  ==========================================
metric                             type     ``PoolStats`` field
=================================  =======  ==========================================
``gpool_size``                     gauge    ``size`` (``+Inf`` for an unbounded pool)
``gpool_workers``                  gauge    ``workers``
``gpool_idle_workers``             gauge    ``idle``
``gpool_busy_tasks``               gauge    ``busy``
``gpool_detached_tasks``           gauge    ``detached``
``gpool_peak_workers``             gauge    ``peak_workers``
``gpool_workers_started_total``    counter  ``workers_started``
``gpool_workers_culled_total``     counter  ``culled``
``gpool_workers_retired_total``    counter  ``retired``
``gpool_tasks_started_total``      counter  ``tasks_started``
``gpool_tasks_completed_total``    counter  ``tasks_completed``
``gpool_tasks_failed_total``       counter  ``tasks_failed``
``gpool_tasks_killed_total``       counter  ``tasks_killed``
``gpool_tasks_detached_total``     counter  ``tasks_detached``
``gpool_tasks_overdue_total``      counter  ``tasks_overdue``
``gpool_tasks_timed_out_total``    counter  ``tasks_timed_out``
``gpool_rejected_total``           counter  ``rejected``
=================================  =======  ==========================================

Metric names must be unique within a registry, so a second collector with the same
namespace cannot join it: export further pools through one collector with
:meth:`PoolCollector.add` (each gets its own ``pool`` label), or give each its own
*namespace*.
"""

from ._serving.metrics import PoolCollector, register

__all__ = ["PoolCollector", "register"]
