"""gpool.metrics: a pool's stats through prometheus_client, on a private registry."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from typing import Any

import gevent
import pytest
from gevent.event import Event
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpool import WorkerPool
from gpool.metrics import PoolCollector, register

from .conftest import wait_until

# PoolStats field -> the sample name it is exported as (namespace "gpool").
EXPORTED = {
    "size": "gpool_size",
    "workers": "gpool_workers",
    "idle": "gpool_idle_workers",
    "busy": "gpool_busy_tasks",
    "detached": "gpool_detached_tasks",
    "peak_workers": "gpool_peak_workers",
    "workers_started": "gpool_workers_started_total",
    "culled": "gpool_workers_culled_total",
    "retired": "gpool_workers_retired_total",
    "tasks_started": "gpool_tasks_started_total",
    "tasks_completed": "gpool_tasks_completed_total",
    "tasks_failed": "gpool_tasks_failed_total",
    "tasks_killed": "gpool_tasks_killed_total",
    "tasks_detached": "gpool_tasks_detached_total",
    "tasks_overdue": "gpool_tasks_overdue_total",
    "tasks_timed_out": "gpool_tasks_timed_out_total",
    "rejected": "gpool_rejected_total",
}
COUNTERS = {field for field, name in EXPORTED.items() if name.endswith("_total")}


def fail() -> None:
    raise ValueError("expected")


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(sample name, pool label) -> value, from the text a scrape would return."""
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, sample.labels["pool"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def busy_pool() -> tuple[WorkerPool, Event]:
    """A pool that has completed, failed and detached tasks, with two still running,
    one of them past its soft deadline."""
    pool = WorkerPool(8, max_idle=60, soft_deadline=0.05)
    for n in range(5):
        pool.submit(abs, -n).get(timeout=5)
    with pytest.raises(ValueError):
        pool.submit(fail).get(timeout=5)
    release = Event()
    pool.spawn(release.wait)
    detached = Event()

    def stream() -> None:
        pool.detach()
        detached.set()
        release.wait()

    pool.spawn(stream)
    assert detached.wait(timeout=5)
    wait_until(lambda: pool.stats().tasks_overdue == 1, what="the running task passed its soft deadline")
    return pool, release


def test_values_match_stats() -> None:
    pool, release = busy_pool()
    registry = CollectorRegistry()
    collector = register(pool, name="web", registry=registry)
    try:
        exported = samples(registry)
        stats = asdict(pool.stats())
        assert stats["busy"] == 1 and stats["detached"] == 1 and stats["tasks_failed"] == 1
        assert stats["tasks_completed"] == 5 and stats["tasks_overdue"] == 1
        assert set(stats) == set(EXPORTED), "a PoolStats field is not exported"
        assert exported == {(EXPORTED[field], "web"): float(value) for field, value in stats.items()}
    finally:
        registry.unregister(collector)
        release.set()
        pool.close()
        assert pool.join(timeout=5)


def test_families_are_typed_and_labelled() -> None:
    with WorkerPool(4) as pool:
        pool.submit(abs, 1).get(timeout=5)
        registry = CollectorRegistry()
        register(pool, registry=registry)
        families = {family.name: family for family in registry.collect()}
    for field, sample_name in EXPORTED.items():
        kind = "counter" if field in COUNTERS else "gauge"
        # prometheus_client names a counter's family without "_total"; its sample has it.
        family = families[sample_name.removesuffix("_total") if kind == "counter" else sample_name]
        assert family.type == kind
        assert family.documentation
        assert [(sample.name, sample.labels) for sample in family.samples] == [(sample_name, {"pool": "default"})]


def test_unbounded_size_is_infinite_and_namespace_applies() -> None:
    with WorkerPool() as pool:
        registry = CollectorRegistry()
        register(pool, name="jobs", registry=registry, namespace="myapp_pool")
        assert registry.get_sample_value("myapp_pool_size", {"pool": "jobs"}) == float("inf")
        assert registry.get_sample_value("myapp_pool_tasks_started_total", {"pool": "jobs"}) == 0
        assert registry.get_sample_value("gpool_size", {"pool": "jobs"}) is None


def test_values_are_read_at_each_scrape() -> None:
    with WorkerPool(4) as pool:
        registry = CollectorRegistry()
        register(pool, registry=registry)
        labels = {"pool": "default"}
        assert registry.get_sample_value("gpool_tasks_completed_total", labels) == 0
        gevent.joinall([gevent.spawn(pool.submit(abs, n).get, timeout=5) for n in range(3)], raise_error=True)
        assert registry.get_sample_value("gpool_tasks_completed_total", labels) == 3
        assert registry.get_sample_value("gpool_workers", labels) == pool.stats().workers


def test_several_pools_one_collector() -> None:
    with WorkerPool(2) as web, WorkerPool(3) as jobs:
        registry = CollectorRegistry()
        collector = register(web, name="web", registry=registry)
        collector.add(jobs, "jobs")
        assert registry.get_sample_value("gpool_size", {"pool": "web"}) == 2
        assert registry.get_sample_value("gpool_size", {"pool": "jobs"}) == 3
        with pytest.raises(ValueError, match="'jobs' is already exported"):
            collector.add(jobs, "jobs")
        # Metric names are unique in a registry: a second collector with the same
        # namespace is refused by prometheus_client, at registration.
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            register(jobs, name="other", registry=registry)
        register(jobs, name="other", registry=registry, namespace="other")


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((object(),), TypeError, "pool must have a stats\\(\\) method"),
        ((WorkerPool(1), ""), ValueError, "name must be a non-empty string, got ''"),
        ((WorkerPool(1), "web", "bad-name"), ValueError, "namespace must match .*, got 'bad-name'"),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        PoolCollector(*args)


def test_default_registry() -> None:
    from prometheus_client import REGISTRY

    with WorkerPool(3) as pool:
        collector = register(pool, name="test_default_registry")
        try:
            assert REGISTRY.get_sample_value("gpool_size", {"pool": "test_default_registry"}) == 3
        finally:
            REGISTRY.unregister(collector)


def test_import_without_prometheus_client_names_the_extra() -> None:
    # A subprocess, so this one's modules stay as they are. None in sys.modules makes
    # an import fail as if the package were not installed.
    code = "import sys; sys.modules['prometheus_client'] = None; import gpool.metrics"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: gpool.metrics needs prometheus_client, which is not installed: pip install 'gpool[prometheus]'"
    )
