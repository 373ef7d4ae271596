"""gunicorn's worker classes behind a real nginx with upstream keep-alive, and under
a plain keep-alive client, through reloads and with a pool smaller than the clients.

Each test runs for gunicorn's own gevent workers (``-k gevent``, ``-k gevent_pywsgi``:
the anchors, what gpool must match) and for both gpool classes. nginx is Debian's, with
the README's upstream settings (``tests/nginx_helpers.py``); the app is
``tests/apps/nginx_echo.py``. Without nginx the nginx tests skip, or fail under
``GPOOL_REQUIRE_NGINX=1``.

Synchronisation is on the master's log (a new worker has loaded the app) and on
counted responses; the sleeps only space the reloads out in time while load runs.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from ..apps.nginx_echo import LOADED_MARK
from ..nginx_helpers import Load, Nginx, Request, Wrk, nginx_proxy, wrk_binary
from .test_gunicorn import (
    GPOOL_PYWSGI_WORKER,
    GPOOL_WORKER,
    Master,
    gunicorn_command,
    launched,
    listening_socket,
)

pytestmark = pytest.mark.nginx

ANCHORS = ["gevent", "gevent_pywsgi"]
WORKER_CLASSES = [*ANCHORS, GPOOL_WORKER, GPOOL_PYWSGI_WORKER]
BODY = b"p" * 100
POST = Request("POST", "/echo", BODY, expect=b"%d\n" % len(BODY))
GET = Request("GET", "/", expect=b"ok\n")
RELOADS = 3
# Between reloads, and after the last one, while the load runs.
RELOAD_SPACING = 1.0
# Behind nginx: long enough that, done right, no drain is ended by it.
GRACEFUL_TIMEOUT = "10"


@contextmanager
def gunicorn_master(
    tmp_path: Path, worker_class: str, *options: str, env: dict[str, str] | None = None
) -> Iterator[Master]:
    """A gunicorn master serving nginx_echo:app, killed on exit."""
    listener = listening_socket()
    command = gunicorn_command(listener, worker_class, "nginx_echo:app", *options)
    with launched(command, listener, tmp_path, env or {}) as master:
        yield master


@contextmanager
def behind_nginx(
    tmp_path: Path, worker_class: str, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Master, Nginx]]:
    """gunicorn_master(...) and an nginx in front of it; both stopped on exit."""
    with ExitStack() as stack:
        master = stack.enter_context(gunicorn_master(tmp_path, worker_class, *options, env=env))
        yield master, stack.enter_context(nginx_proxy(tmp_path, master.port))


def worker_pids(master: Master) -> list[int]:
    """Every worker that has loaded the app so far, in boot order."""
    return [int(pid) for pid in re.findall(rf"^{re.escape(LOADED_MARK)} (\d+)$", master.log(), re.MULTILINE)]


def reload_three_times(master: Master, workers: int, load: Load | Wrk) -> list[float]:
    """SIGHUP the master RELOADS times while *load* runs; return how long each took.

    A reload is over once its new workers have loaded the app and the workers it
    replaces have exited (gunicorn's master handles the next HUP only then); the next
    comes RELOAD_SPACING later. The load then runs on RELOAD_SPACING and is stopped.
    """
    master.wait_for_log(LOADED_MARK, count=workers)
    load.wait_for(lambda results: results.total >= 20, "load flowing before the first reload")
    durations = []
    for reload in range(1, RELOADS + 1):
        time.sleep(RELOAD_SPACING)  # load-shaping only: the reloads come amid traffic
        old = worker_pids(master)[-workers:]
        started = time.monotonic()
        master.proc.send_signal(signal.SIGHUP)
        master.wait_for_log(LOADED_MARK, count=workers * (reload + 1))
        for pid in old:
            master.wait_for_log(f"Worker exiting (pid: {pid})")
        durations.append(round(time.monotonic() - started, 2))
    time.sleep(RELOAD_SPACING)
    load.stop()
    return durations


# -- reload under POST load behind nginx ----------------------------------------------


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_reloads_under_post_load_behind_nginx_fail_no_request(tmp_path: Path, worker_class: str) -> None:
    # nginx retries a request whose upstream connection failed only for idempotent
    # methods: a POST sent on a keep-alive connection the backend closes reaches
    # the client as a 502. gunicorn's gevent workers, reloading, answer the next
    # request on an idle connection with "Connection: close" instead of closing it.
    options = ["--workers=2", f"--graceful-timeout={GRACEFUL_TIMEOUT}"]
    with behind_nginx(tmp_path, worker_class, *options) as (master, nginx):
        wrk = wrk_binary()
        # wrk keeps nginx busy, as real traffic does (without it, Python clients): more
        # client connections than nginx keeps idle upstream, so that it opens, reuses
        # and drops upstream connections all along.
        load = Wrk(wrk, nginx, POST, connections=48) if wrk else Load(nginx.port, POST, clients=16)
        generator = "wrk" if wrk else "http.client"
        with load:
            durations = reload_three_times(master, 2, load)
        results = load.results
        premature = nginx.error_lines("upstream prematurely closed connection")
        report = (
            f"{worker_class} ({generator}): {results.summary()}; nginx logged {len(premature)} 'upstream "
            f"prematurely closed connection'; reloads took {durations}s; nginx errors: {nginx.error_lines()[:5]}"
        )
        print(report)  # the figures, shown by pytest -rA
        assert results.statuses[200] > 200, report  # the load did run through the reloads
        assert results.failed == 0, report
        assert not results.errors, report
        assert not premature, report


# -- keep-alive starvation behind nginx -----------------------------------------------

# gunicorn's --keep-alive here: a client that waits this long has waited out a
# keep-alive timeout, the fate of the clients that find the pool full of idle
# keep-alive connections with gunicorn's own workers (README, Deploying).
KEEP_ALIVE = 3.0
STARVATION_CLIENTS = 12
STARVATION_REQUESTS = 10
# Seconds a keep-alive connection must have idled before gpool hangs it up for a
# waiting client (GPOOL_RECLAIM_IDLE_AFTER).
RECLAIM_IDLE_AFTER = "0.2"
ANCHOR_STARVES = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="negative control: gunicorn's gevent workers keep an idle keep-alive connection's slot until "
    "--keep-alive runs out (gevent_pywsgi: for ever), so clients beyond the pool wait",
)


@pytest.mark.parametrize(
    "worker_class",
    [pytest.param(name, marks=ANCHOR_STARVES) for name in ANCHORS] + [GPOOL_WORKER, GPOOL_PYWSGI_WORKER],
)
def test_keep_alive_clients_beyond_the_pool_are_served_through_nginx(tmp_path: Path, worker_class: str) -> None:
    # One worker with two slots; nginx caches up to 16 idle upstream connections and
    # opens one per concurrent request it has no idle connection for: most of them
    # wait in the listen queue while the pool holds nginx's keep-alive connections.
    env = {} if worker_class in ANCHORS else {"GPOOL_RECLAIM_IDLE_AFTER": RECLAIM_IDLE_AFTER}
    options = ["--workers=1", "--worker-connections=2", f"--keep-alive={KEEP_ALIVE:g}"]
    with behind_nginx(tmp_path, worker_class, *options, env=env) as (master, nginx):
        master.wait_for_log(LOADED_MARK)
        # A client gives up after 1.5 keep-alive timeouts: the anchors starve some for ever.
        load = Load(
            nginx.port,
            GET,
            clients=STARVATION_CLIENTS,
            per_client=STARVATION_REQUESTS,
            timeout=KEEP_ALIVE * 1.5,
            deadline=2 * KEEP_ALIVE,
        )
        with load:
            load.join()
        results = load.results
        report = (
            f"{worker_class}: {results.summary()} (--keep-alive={KEEP_ALIVE:g}); nginx retried "
            f"{nginx.retried()} requests on another upstream connection; nginx errors: {nginx.error_lines()[:5]}"
        )
        print(report)  # the figures, shown by pytest -rA
        assert results.statuses[200] == STARVATION_CLIENTS * STARVATION_REQUESTS, report
        assert results.failed == 0, report
        # No request waited out a keep-alive timeout, nor the whole run a few of them.
        assert results.max_latency < KEEP_ALIVE, report
        assert results.elapsed < 2 * KEEP_ALIVE, report


# -- reload under a plain keep-alive client -------------------------------------------

# The client is never idle, so a drain done right ends at its next response
# ("Connection: close"); one that keeps serving the connection is ended by this.
DIRECT_GRACEFUL_TIMEOUT = "2"
PYWSGI_ANCHOR_CUTS = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="gunicorn's gevent_pywsgi never answers 'Connection: close' while draining: it serves a busy "
    "keep-alive connection on until the graceful timeout, then closes it under the client's next request",
)


@pytest.mark.parametrize(
    "worker_class",
    ["gevent", pytest.param("gevent_pywsgi", marks=PYWSGI_ANCHOR_CUTS), GPOOL_WORKER, GPOOL_PYWSGI_WORKER],
)
def test_reloads_fail_no_request_of_a_plain_keep_alive_client(tmp_path: Path, worker_class: str) -> None:
    # http.client sends each request on its open connection without first checking
    # that the server still has it: a connection closed while idle fails the next one.
    options = ["--workers=2", f"--graceful-timeout={DIRECT_GRACEFUL_TIMEOUT}"]
    with gunicorn_master(tmp_path, worker_class, *options) as master:
        with Load(master.port, POST, clients=1) as load:
            durations = reload_three_times(master, 2, load)
        results = load.results
        report = f"{worker_class}: {results.summary()}; reloads took {durations}s"
        print(report)  # the figures, shown by pytest -rA
        assert results.statuses[200] > 50, report
        assert results.failed == 0, report
        assert not results.errors, report
