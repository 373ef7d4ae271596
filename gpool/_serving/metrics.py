"""The implementation of :mod:`gpool.metrics`; its documentation is there."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Iterator

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "gpool.metrics needs prometheus_client, which is not installed: pip install 'gpool[prometheus]'"
    ) from exc

from .._core.stats import PoolStats

if TYPE_CHECKING:
    from .._core.pool import WorkerPool

__all__ = ["PoolCollector", "register"]

# (metric name without the namespace, PoolStats field, type, help text). Counter names
# are given without "_total": prometheus_client appends it to the sample name.
_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("size", "size", "gauge", "Most tasks the pool runs at once, its size (+Inf: unbounded)."),
    ("workers", "workers", "gauge", "Worker greenlets alive now: idle, busy, or running a detached task."),
    ("idle_workers", "idle", "gauge", "Workers parked on the ready list now, waiting for a task."),
    ("busy_tasks", "busy", "gauge", "Tasks running now that hold a slot (len(pool)); detached tasks are not counted."),
    ("detached_tasks", "detached", "gauge", "Tasks running now that gave their slot back with detach()."),
    ("peak_workers", "peak_workers", "gauge", "The most worker greenlets alive at once since the pool was created."),
    ("workers_started", "workers_started", "counter", "Worker greenlets created."),
    ("workers_culled", "culled", "counter", "Idle workers retired for idling longer than max_idle."),
    (
        "workers_retired",
        "retired",
        "counter",
        "Workers that exited for any reason but culling: close(), max_tasks_per_worker reached, "
        "their task killed at hard_deadline or raising a system error (SystemExit, KeyboardInterrupt), "
        "or a detached task ending with no free slot to park in.",
    ),
    (
        "tasks_started",
        "tasks_started",
        "counter",
        "Tasks handed to a worker by spawn(), try_spawn() or submit(), a server's connections included; "
        "rejected connections are not.",
    ),
    (
        "tasks_completed",
        "tasks_completed",
        "counter",
        "Tasks that returned, or ended with a GreenletExit they raised themselves (not one from kill()).",
    ),
    (
        "tasks_failed",
        "tasks_failed",
        "counter",
        "Tasks that raised an exception other than a kill, submit() tasks whose exception went to their "
        "AsyncResult included.",
    ),
    (
        "tasks_killed",
        "tasks_killed",
        "counter",
        "Tasks ended by WorkerPool.kill() (which server.stop() and a drain call past their timeout) "
        "or killed at hard_deadline (those are also in tasks_timed_out).",
    ),
    (
        "tasks_detached",
        "tasks_detached",
        "counter",
        "Tasks that gave their slot back with detach(), each counted once.",
    ),
    (
        "tasks_overdue",
        "tasks_overdue",
        "counter",
        "Tasks seen running past soft_deadline, each counted once (its stack is logged).",
    ),
    (
        "tasks_timed_out",
        "tasks_timed_out",
        "counter",
        "Tasks killed for running past hard_deadline (also counted in tasks_killed).",
    ),
    (
        "rejected",
        "rejected",
        "counter",
        "Connections turned away, never started as tasks, because every slot was busy (overflow='reject').",
    ),
)

_LABELS = ("pool",)

# Prometheus's rule for metric names; the namespace starts every name.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class PoolCollector:
    """A ``prometheus_client`` collector for one or more pools' :class:`~gpool.PoolStats`.

    Reads ``stats()`` at every scrape. :meth:`collect` may run on whatever thread serves
    the scrape; it only reads the pool's counters, which never blocks or switches.
    """

    def __init__(self, pool: WorkerPool, name: str = "default", namespace: str = "gpool") -> None:
        if not isinstance(namespace, str):
            raise TypeError(
                f"namespace must match [a-zA-Z_:][a-zA-Z0-9_:]*, got {namespace!r} ({type(namespace).__name__})"
            )
        if not _NAME.fullmatch(namespace):
            raise ValueError(f"namespace must match [a-zA-Z_:][a-zA-Z0-9_:]*, got {namespace!r}")
        self.namespace = namespace
        self._pools: dict[str, WorkerPool] = {}
        self.add(pool, name)

    def add(self, pool: WorkerPool, name: str) -> None:
        """Export *pool* too, labelled ``pool=name``; *name* must be new to this collector."""
        if not callable(getattr(pool, "stats", None)):
            raise TypeError(
                f"pool must have a stats() method (a gpool.WorkerPool), got {pool!r} ({type(pool).__name__})"
            )
        if not isinstance(name, str):
            raise TypeError(f"name must be a non-empty string, got {name!r} ({type(name).__name__})")
        if not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if name in self._pools:
            raise ValueError(f"a pool named {name!r} is already exported by this collector")
        self._pools[name] = pool

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples: lets a registry detect name clashes
        at ``register()`` time without reading any pool."""
        for suffix, _field, kind, documentation in _METRICS:
            yield self._family(suffix, kind, documentation)

    def collect(self) -> Iterator[Metric]:
        """One family per metric, one sample per pool."""
        # Take each pool's snapshot once, so all families of one scrape agree.
        snapshots: list[tuple[str, PoolStats]] = [(name, pool.stats()) for name, pool in self._pools.items()]
        for suffix, field, kind, documentation in _METRICS:
            family = self._family(suffix, kind, documentation)
            for name, stats in snapshots:
                value = getattr(stats, field)
                family.add_metric([name], math.inf if value is None else float(value))
            yield family

    def _family(self, suffix: str, kind: str, documentation: str) -> CounterMetricFamily | GaugeMetricFamily:
        name = f"{self.namespace}_{suffix}"
        if kind == "counter":
            return CounterMetricFamily(name, documentation, labels=_LABELS)
        return GaugeMetricFamily(name, documentation, labels=_LABELS)

    def __repr__(self) -> str:
        return f"<PoolCollector namespace={self.namespace!r} pools={sorted(self._pools)}>"


def register(
    pool: WorkerPool, name: str = "default", registry: CollectorRegistry | None = None, namespace: str = "gpool"
) -> PoolCollector:
    """Build a :class:`PoolCollector` for *pool* and register it on *registry*
    (prometheus_client's default ``REGISTRY`` when None); return the collector, which
    ``registry.unregister()`` takes back."""
    if registry is not None and not callable(getattr(registry, "register", None)):
        raise TypeError(
            "registry must be None or a prometheus_client CollectorRegistry, "
            f"got {registry!r} ({type(registry).__name__})"
        )
    collector = PoolCollector(pool, name, namespace)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
