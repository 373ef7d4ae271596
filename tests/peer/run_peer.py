"""Run gevent's own server test suites with ``gpool.WorkerPool`` as the servers' spawn.

gevent ships its tests in the wheel (``gevent.tests``). This script imports one of
them, swaps ``gpool.WorkerPool`` in wherever the suite would use ``gevent.pool.Pool``
or gevent's default spawn, runs the relevant ``unittest`` classes the way
``gevent.testing`` runs them (plain ``unittest`` with gevent's ``TestCase``), and ends
with one machine-readable line on stdout::

    PEER-SUMMARY {"suite": ..., "tests_run": ..., "failures": ..., "errors": ...,
                  "skipped": ..., "pools_created": ..., "tasks_started": ..., ...}

Suites (each needs its own process: ``test__pywsgi`` monkey-patches at import):

``server``
    ``gevent.tests.test__server.TestPoolSpawn`` with ``get_spawn()`` returning a
    fresh ``WorkerPool(2)`` instead of ``2`` (which means ``gevent.pool.Pool(2)``).
``server_pywsgi``
    The same for ``gevent.tests.test__server_pywsgi.TestPoolSpawn``.
``pywsgi``
    Every test class of ``gevent.tests.test__pywsgi``, with the module's ``pywsgi``
    name replaced by a stand-in whose ``WSGIServer`` defaults ``spawn`` to a new
    ``WorkerPool``; every other attribute is gevent's ``pywsgi`` itself.
``pywsgi_gpool_server``
    The same, with the stand-in's ``WSGIServer`` derived from ``gpool.wsgi.WSGIServer``
    (keep-alive tracking, its own request reader) instead of gevent's.

Besides the unittest counts, the summary says how many pools were built and how many
tasks they started, and how many servers were built without one of those pools
(``servers_off_pool``, expected 0), so a caller can tell the pool was really used.
Two probes watch for trouble the tests themselves let pass: ``hub_errors`` (errors
the hub printed) and ``reads_after_close`` (a server's accept loop calling
``do_read()`` after the server was closed, which gevent's own pool never causes).
Their ``*_detail`` lists name the test each happened in.

``--baseline`` runs the same thing with a (counting) ``gevent.pool.Pool`` instead, to
tell a gpool bug from a failure gevent's own pool shares.

Usage::

    python tests/peer/run_peer.py {server,server_pywsgi,pywsgi} [-v] [--baseline]

Exit status: 0 when every test passed and the pool was used by every server;
1 when a test failed or errored; 2 when the tests passed but the pool was bypassed.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import sys
import time
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import unittest

# Deliberately nothing gevent- or socket-related up here: test__pywsgi calls
# monkey.patch_all() when imported, and gevent's own runner gives it a fresh process
# where that happens before anything else is imported. gpool is imported after it.

SUMMARY_PREFIX = "PEER-SUMMARY "

SUITES = {
    # suite name: (gevent test module, classes to run: None = the whole module)
    "server": ("gevent.tests.test__server", ("TestPoolSpawn",)),
    "server_pywsgi": ("gevent.tests.test__server_pywsgi", ("TestPoolSpawn",)),
    "pywsgi": ("gevent.tests.test__pywsgi", None),
    # The same module with gpool.wsgi.WSGIServer (and its handler) in place of pywsgi's.
    "pywsgi_gpool_server": ("gevent.tests.test__pywsgi", None),
}

# TestPoolSpawn.get_spawn() returns 2, i.e. gevent.pool.Pool(2); test_pool_full
# depends on that size, so the stand-in keeps it.
POOL_SPAWN_SIZE = 2


def _quiet_warnings() -> None:
    """Print gevent's deprecation and resource warnings; never raise them.

    gevent's tests touch APIs deprecated upstream (ssl.PROTOCOL_TLS, for one), and the
    caller may run with ``-W error`` or ``PYTHONWARNINGS=error``: those are gevent's
    warnings, not gpool's, so they must not fail the run. "default" (print once per
    place) is what gevent's own test runner uses for them. Filters added here go in
    front of whatever the interpreter was started with.
    """
    for category in (DeprecationWarning, PendingDeprecationWarning, ResourceWarning):
        warnings.filterwarnings("default", category=category)


class Registry:
    """Every pool handed to a server in this process, and every server built."""

    def __init__(self, label: str, pool_type: type, make: Callable[[int | None], Any]) -> None:
        self.label = label
        self.pool_type = pool_type
        self._make = make
        self.pools: list[Any] = []
        self.servers = 0
        self.servers_off_pool: list[str] = []
        # Accept-loop passes over a server already closed (socket gone): gevent's
        # StreamServer then fails in do_read(). Never happens with gevent's own pool.
        self.reads_after_close: list[str] = []
        # Errors the hub printed (handled errors gevent's tests expect are not printed).
        self.hub_errors: list[str] = []
        self.current_test = "<no test>"

    def make_pool(self, size: int | None) -> Any:
        pool = self._make(size)
        self.pools.append(pool)
        return pool

    def note_server(self, server: Any, spawn: Any) -> None:
        self.servers += 1
        if not isinstance(server.pool, self.pool_type):
            self.servers_off_pool.append(f"{self.current_test}: {type(server).__name__} built with spawn={spawn!r}")

    def tasks_started(self) -> int:
        return sum(_tasks_started(pool) for pool in self.pools)


def _tasks_started(pool: Any) -> int:
    stats = getattr(pool, "stats", None)
    if stats is not None:
        return int(stats().tasks_started)
    return int(pool.peer_tasks_started)  # the counting gevent Pool of --baseline


def _workerpool_registry() -> Registry:
    from gpool import WorkerPool

    return Registry("gpool.WorkerPool", WorkerPool, lambda size: WorkerPool(size))


def _baseline_registry() -> Registry:
    from gevent.pool import Pool

    class CountingPool(Pool):  # type: ignore[misc]
        """gevent's own Pool, counting the tasks servers give it."""

        peer_tasks_started = 0

        def spawn(self, *args: Any, **kwargs: Any) -> Any:
            self.peer_tasks_started += 1
            return super().spawn(*args, **kwargs)

    return Registry("gevent.pool.Pool (baseline)", CountingPool, lambda size: CountingPool(size))


def _watch_servers(registry: Registry) -> None:
    """Record every server gevent builds, and whether it got one of our pools.

    Every ``BaseServer`` (StreamServer, WSGIServer) calls ``set_spawn`` from its
    ``__init__``; wrapping it on the class catches servers built by any route.
    """
    from gevent.baseserver import BaseServer

    original = BaseServer.set_spawn

    def set_spawn(self: Any, spawn: Any) -> None:
        original(self, spawn)
        registry.note_server(self, spawn)

    BaseServer.set_spawn = set_spawn


def _watch_hub_and_accept_loop(registry: Registry) -> None:
    """Record what the hub prints, and accept-loop passes over closed servers."""
    from gevent.hub import Hub
    from gevent.server import StreamServer

    print_exception = Hub.print_exception

    def print_exception_and_note(self: Any, context: Any, t: Any, v: Any, tb: Any) -> Any:
        name = getattr(t, "__name__", repr(t))
        registry.hub_errors.append(f"{registry.current_test}: {name} in {type(context).__name__}")
        return print_exception(self, context, t, v, tb)

    Hub.print_exception = print_exception_and_note

    do_read = StreamServer.do_read

    def do_read_and_note(self: Any) -> Any:
        if self.closed:
            registry.reads_after_close.append(f"{registry.current_test}: {self!r}")
        return do_read(self)

    StreamServer.do_read = do_read_and_note


def _pool_spawn_case(module: types.ModuleType, registry: Registry) -> type:
    """TestPoolSpawn with a fresh pool of ours per server instead of ``Pool(2)``."""
    base = module.TestPoolSpawn

    def get_spawn(self: Any) -> Any:
        return registry.make_pool(POOL_SPAWN_SIZE)

    # A subclass, so the inherited test methods keep the wrappers gevent's TestCase
    # metaclass put on them (timeouts, error_fatal, restoring hub.handle_error).
    return type("TestWorkerPoolSpawn", (base,), {"get_spawn": get_spawn, "__module__": __name__})


class PywsgiStandIn(types.ModuleType):
    """What ``test__pywsgi`` sees as ``pywsgi``: gevent.pywsgi with one class replaced.

    Reads fall through to the real module, and so do writes (a test that sets, say,
    ``pywsgi.MAX_REQUEST_LINE`` changes gevent's own module, as it would unpatched);
    only ``WSGIServer`` is ours.
    """

    def __init__(self, real: types.ModuleType, server_class: type) -> None:
        super().__init__(real.__name__, real.__doc__)
        self.__dict__["_real"] = real
        self.__dict__["WSGIServer"] = server_class

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_real"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "WSGIServer":
            self.__dict__[name] = value
        else:
            setattr(self.__dict__["_real"], name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self.__dict__["_real"])) | set(self.__dict__))


def _pool_wsgi_server(real: type, registry: Registry, size: int | None) -> type:
    """A ``WSGIServer`` whose ``spawn`` defaults to a fresh pool instead of ``'default'``."""

    class WSGIServer(real):  # type: ignore[misc]
        def __init__(
            self, listener: Any, application: Any = None, backlog: Any = None, spawn: Any = "default", **kwargs: Any
        ) -> None:
            if isinstance(spawn, str) and spawn == "default":
                spawn = registry.make_pool(size)
            super().__init__(listener, application, backlog, spawn, **kwargs)

    WSGIServer.__doc__ = real.__doc__
    return WSGIServer


def _load(
    module: types.ModuleType,
    class_names: tuple[str, ...] | None,
    registry: Registry,
    pool_size: int | None,
    gpool_server: bool = False,
) -> unittest.TestSuite:
    import unittest

    loader = unittest.TestLoader()
    if class_names is None:
        # test__pywsgi: the whole module, every server on our pool.
        from gevent import pywsgi

        from gpool import wsgi

        base = wsgi.WSGIServer if gpool_server else pywsgi.WSGIServer
        server_class = _pool_wsgi_server(base, registry, pool_size)
        module.pywsgi = PywsgiStandIn(pywsgi, server_class)  # type: ignore[attr-defined]
        return loader.loadTestsFromModule(module)
    suite = unittest.TestSuite()
    for name in class_names:
        assert name == "TestPoolSpawn", name
        suite.addTests(loader.loadTestsFromTestCase(_pool_spawn_case(module, registry)))
    return suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("-v", "--verbose", action="store_true", help="name every test as it runs")
    parser.add_argument(
        "--baseline", action="store_true", help="use (a counting) gevent.pool.Pool instead of gpool.WorkerPool"
    )
    parser.add_argument(
        "--pywsgi-pool-size",
        type=int,
        default=10,
        help="size of the pool each test__pywsgi server gets (0: unbounded); default %(default)s",
    )
    parser.add_argument(
        "--hang-timeout",
        type=float,
        default=240.0,
        help="dump every stack and exit 1 if the run takes longer than this many seconds",
    )
    args = parser.parse_args(argv)
    if args.hang_timeout > 0:
        faulthandler.dump_traceback_later(args.hang_timeout, exit=True)
    _quiet_warnings()

    module_name, class_names = SUITES[args.suite]
    module = importlib.import_module(module_name)  # test__pywsgi: monkey.patch_all() here
    import unittest

    import gevent

    registry = _baseline_registry() if args.baseline else _workerpool_registry()
    _watch_servers(registry)
    _watch_hub_and_accept_loop(registry)
    gpool_server = args.suite == "pywsgi_gpool_server"
    suite = _load(module, class_names, registry, args.pywsgi_pool_size or None, gpool_server)

    tests_loaded = suite.countTestCases()
    started_ids: set[str] = set()

    class Result(unittest.TextTestResult):
        def startTest(self, test: Any) -> None:
            registry.current_test = test.id()
            started_ids.add(test.id())
            super().startTest(test)

    verbosity = 2 if args.verbose else 1
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=verbosity, resultclass=Result)  # type: ignore[arg-type]
    started = time.monotonic()
    result = runner.run(suite)
    elapsed = time.monotonic() - started

    summary = {
        "suite": args.suite,
        "module": module_name,
        "pool": registry.label,
        "gevent": gevent.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        # Python 3.12+ leaves skipped tests out of testsRun, so count for ourselves:
        # every loaded test is either executed or skipped.
        "tests_run": result.testsRun,
        "tests_loaded": tests_loaded,
        "tests_executed": len(started_ids - {test.id() for test, _ in result.skipped}),
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "expected_failures": len(result.expectedFailures),
        "unexpected_successes": len(result.unexpectedSuccesses),
        "pools_created": len(registry.pools),
        "tasks_started": registry.tasks_started(),
        "servers": registry.servers,
        "servers_off_pool": len(registry.servers_off_pool),
        "reads_after_close": len(registry.reads_after_close),
        "hub_errors": len(registry.hub_errors),
        "seconds": round(elapsed, 2),
        "failed_tests": [test.id() for test, _ in result.failures + result.errors],
        "skipped_tests": [[test.id(), reason] for test, reason in result.skipped],
        "off_pool_detail": registry.servers_off_pool[:20],
        "reads_after_close_detail": registry.reads_after_close[:20],
        "hub_errors_detail": registry.hub_errors[:50],
    }
    faulthandler.cancel_dump_traceback_later()
    sys.stderr.flush()
    sys.stdout.write(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
    if not result.wasSuccessful():
        return 1
    if not registry.pools or registry.tasks_started() == 0 or registry.servers_off_pool:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
