"""gpool.metrics: a pool's stats through prometheus_client, on a private registry."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from typing import Any, Callable

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpool import WorkerPool
from gpool.metrics import PoolCollector, register

from ..helpers import connect, read_all, wait_until

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


# -- HELP texts -----------------------------------------------------------------------

# What a scrape says each metric counts, pinned word for word: changing what a counter
# means, or its text, must change both. The scenarios below then check that each cause
# a text names really moves that metric (and by how much).
HELP = {
    "size": "Most tasks the pool runs at once, its size (+Inf: unbounded).",
    "workers": "Worker greenlets alive now: idle, busy, or running a detached task.",
    "idle": "Workers parked on the ready list now, waiting for a task.",
    "busy": "Tasks running now that hold a slot (len(pool)); detached tasks are not counted.",
    "detached": "Tasks running now that gave their slot back with detach().",
    "peak_workers": "The most worker greenlets alive at once since the pool was created.",
    "workers_started": "Worker greenlets created.",
    "culled": "Idle workers retired for idling longer than max_idle.",
    "retired": (
        "Workers that exited for any reason but culling: close(), max_tasks_per_worker reached, "
        "their task killed at hard_deadline or raising a system error (SystemExit, KeyboardInterrupt), "
        "or a detached task ending with no free slot to park in."
    ),
    "tasks_started": (
        "Tasks handed to a worker by spawn(), try_spawn() or submit(), a server's connections included; "
        "rejected connections are not."
    ),
    "tasks_completed": (
        "Tasks that returned, or ended with a GreenletExit they raised themselves (not one from kill())."
    ),
    "tasks_failed": (
        "Tasks that raised an exception other than a kill, submit() tasks whose exception went to their "
        "AsyncResult included."
    ),
    "tasks_killed": (
        "Tasks ended by WorkerPool.kill() (which server.stop() and a drain call past their timeout) "
        "or killed at hard_deadline (those are also in tasks_timed_out)."
    ),
    "tasks_detached": "Tasks that gave their slot back with detach(), each counted once.",
    "tasks_overdue": "Tasks seen running past soft_deadline, each counted once (its stack is logged).",
    "tasks_timed_out": "Tasks killed for running past hard_deadline (also counted in tasks_killed).",
    "rejected": ("Connections turned away, never started as tasks, because every slot was busy (overflow='reject')."),
}


def help_texts(registry: CollectorRegistry) -> dict[str, str]:
    """PoolStats field -> the HELP line a scrape returns for it."""
    text = generate_latest(registry).decode("utf-8")
    documentation = {family.name: family.documentation for family in text_string_to_metric_families(text)}
    return {field: documentation[name.removesuffix("_total")] for field, name in EXPORTED.items()}


def test_help_texts_are_pinned() -> None:
    with WorkerPool(2) as pool:
        registry = CollectorRegistry()
        register(pool, registry=registry)
        assert help_texts(registry) == HELP


# A scenario makes one cause happen and returns the pool, what the scrape must show
# then ({field: (value, the words of its HELP text that name this cause)}) and a
# cleanup to run after the scrape.
Expected = dict[str, tuple[int, str]]
Scenario = Callable[[], tuple[WorkerPool, Expected, Callable[[], None]]]


def _nothing() -> None:
    pass


def _shut(pool: WorkerPool, *events: Event) -> Callable[[], None]:
    def cleanup() -> None:
        for event in events:
            event.set()
        pool.close()
        assert pool.join(timeout=5)

    return cleanup


def killed_by_kill() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    pool.spawn(Event().wait)
    pool.kill(timeout=5)
    return pool, {"tasks_killed": (1, "WorkerPool.kill()"), "tasks_timed_out": (0, "hard_deadline")}, _shut(pool)


def killed_at_hard_deadline() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2, hard_deadline=0.05)
    pool.spawn(Event().wait)
    wait_until(lambda: pool.stats().retired == 1, what="the watchdog killed the task and its worker retired")
    expected = {
        "tasks_killed": (1, "killed at hard_deadline"),
        "tasks_timed_out": (1, "past hard_deadline"),
        "retired": (1, "their task killed at hard_deadline"),
        "tasks_failed": (0, "other than a kill"),
    }
    return pool, expected, _shut(pool)


def killed_by_server_stop() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    entered = Event()

    def handle(_sock: Any, _address: Any) -> None:
        entered.set()
        Event().wait()

    server = StreamServer(("127.0.0.1", 0), handle, spawn=pool)
    server.start()
    with connect(server):
        assert entered.wait(timeout=5)
        server.stop(timeout=0.05)  # joins the pool for 0.05 s, then kills what runs
    expected = {"tasks_killed": (1, "server.stop()"), "tasks_started": (1, "a server's connections included")}
    return pool, expected, _shut(pool)


def completed() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    assert pool.submit(abs, -1).get(timeout=5) == 1
    return pool, {"tasks_completed": (1, "Tasks that returned")}, _shut(pool)


def ended_with_its_own_greenlet_exit() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)

    def leave() -> None:
        raise gevent.GreenletExit

    pool.spawn(leave)
    assert pool.join(timeout=5)
    expected = {
        "tasks_completed": (1, "ended with a GreenletExit they raised themselves"),
        "tasks_killed": (0, "WorkerPool.kill()"),
        "tasks_failed": (0, "other than a kill"),
    }
    return pool, expected, _shut(pool)


def failed() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    with pytest.raises(ValueError):
        pool.submit(fail).get(timeout=5)
    hub = gevent.get_hub()
    reported: list[object] = []
    hub.handle_error = lambda context, kind, value, tb: reported.append(value)
    try:
        pool.spawn(fail)
        assert pool.join(timeout=5)
    finally:
        del hub.handle_error
    assert len(reported) == 1
    return pool, {"tasks_failed": (2, "raised an exception"), "tasks_completed": (0, "returned")}, _shut(pool)


def failed_with_a_system_error() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)

    def leave() -> None:
        raise SystemExit(3)

    hub = gevent.get_hub()
    reported: list[object] = []
    # Recorded, not re-raised in this (the main) greenlet as gevent's handler would.
    hub.handle_error = lambda context, kind, value, tb: reported.append(value)
    try:
        pool.spawn(leave)
        wait_until(lambda: bool(reported), what="the system error was reported")
    finally:
        del hub.handle_error
    expected = {"tasks_failed": (1, "raised an exception"), "retired": (1, "raising a system error (SystemExit")}
    return pool, expected, _shut(pool)


def retired_at_close() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    pool.submit(abs, 1).get(timeout=5)
    pool.close()
    assert pool.join(timeout=5)
    return pool, {"retired": (1, "close()"), "culled": (0, "max_idle"), "workers": (0, "alive now")}, _nothing


def retired_at_the_recycle_limit() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2, max_tasks_per_worker=1)
    pool.submit(abs, 1).get(timeout=5)
    wait_until(lambda: pool.stats().workers == 0, what="the worker retired after its one task")
    return pool, {"retired": (1, "max_tasks_per_worker reached"), "workers_started": (1, "created")}, _shut(pool)


def culled_after_max_idle() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2, max_idle=0.05)
    pool.submit(abs, 1).get(timeout=5)
    wait_until(lambda: pool.stats().culled == 1, what="the idle worker was culled")
    return pool, {"culled": (1, "idling longer than max_idle"), "retired": (0, "but culling")}, _shut(pool)


def started_three_ways() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(3)
    pool.spawn(abs, 1)
    assert pool.try_spawn(abs, 1)
    pool.submit(abs, 1).get(timeout=5)
    assert pool.join(timeout=5)
    expected = {
        "tasks_started": (3, "spawn(), try_spawn() or submit()"),
        "tasks_completed": (3, "returned"),
        "size": (3, "its size"),
        "busy": (0, "Tasks running now"),
    }
    return pool, expected, _shut(pool)


def rejected_while_full() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(1, overflow="reject")
    entered, release = Event(), Event()

    def handle(_sock: Any, _address: Any) -> None:
        entered.set()
        release.wait()

    server = StreamServer(("127.0.0.1", 0), handle, spawn=pool)
    server.start()
    try:
        with connect(server):
            assert entered.wait(timeout=5)
            with connect(server) as turned_away:
                assert read_all(turned_away) == b""  # closed at once, never served
            assert pool.stats().rejected == 1
            release.set()
            assert pool.join(timeout=5)
    finally:
        server.stop(timeout=5)
    expected = {
        "rejected": (1, "every slot was busy (overflow='reject')"),
        "tasks_started": (1, "rejected connections are not"),
        "peak_workers": (1, "The most worker greenlets alive at once"),
    }
    return pool, expected, _shut(pool)


def detached_twice() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2)
    detached, release = Event(), Event()

    def stream() -> None:
        pool.detach()
        pool.detach()  # harmless: still one detached task
        detached.set()
        release.wait()

    pool.spawn(stream)
    assert detached.wait(timeout=5)
    expected = {
        "tasks_detached": (1, "each counted once"),
        "detached": (1, "gave their slot back with detach()"),
        "busy": (0, "detached tasks are not counted"),
        "workers": (1, "running a detached task"),
        "idle": (0, "parked on the ready list"),
    }
    return pool, expected, _shut(pool, release)


def overdue() -> tuple[WorkerPool, Expected, Callable[[], None]]:
    pool = WorkerPool(2, soft_deadline=0.05)
    release = Event()
    pool.spawn(release.wait)
    wait_until(lambda: pool.stats().tasks_overdue == 1, what="the task passed its soft deadline")
    expected = {"tasks_overdue": (1, "running past soft_deadline"), "tasks_killed": (0, "hard_deadline")}
    return pool, expected, _shut(pool, release)


SCENARIOS: list[Scenario] = [
    killed_by_kill,
    killed_at_hard_deadline,
    killed_by_server_stop,
    completed,
    ended_with_its_own_greenlet_exit,
    failed,
    failed_with_a_system_error,
    retired_at_close,
    retired_at_the_recycle_limit,
    culled_after_max_idle,
    started_three_ways,
    rejected_while_full,
    detached_twice,
    overdue,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.__name__ for scenario in SCENARIOS])
def test_each_cause_a_help_text_names_moves_its_metric(baseline: None, scenario: Scenario) -> None:
    pool, expected, cleanup = scenario()
    try:
        registry = CollectorRegistry()
        register(pool, registry=registry)
        exported = samples(registry)
        for field, (value, words) in expected.items():
            assert words in HELP[field], f"the HELP text of {field} does not name this cause: {words!r}"
            assert exported[(EXPORTED[field], "default")] == value, field
    finally:
        cleanup()


def test_every_counter_has_a_scenario_that_moves_it() -> None:
    moved = set()
    for scenario in SCENARIOS:
        _pool, expected, cleanup = scenario()
        cleanup()
        moved |= {field for field, (value, _words) in expected.items() if value > 0}
    assert moved >= COUNTERS, sorted(COUNTERS - moved)
