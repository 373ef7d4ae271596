"""``gpool serve --workers N``: a WSGI app in N gunicorn worker processes.

gunicorn's arbiter does the prefork, the supervision and the signals; each worker is
a :mod:`gpool.workers` class building its own WorkerPool. The pool options travel to
the workers as the ``GPOOL_*`` environment variables those classes read, through
gunicorn's ``raw_env`` setting, so they behave exactly as under ``gunicorn -k``.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import sys
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]
from gunicorn.util import import_app  # type: ignore[import-untyped]

from .._core.pool import WorkerPool
from .._core.validate import check_seconds
from .._serving.keepalive import DEFAULT_RECLAIM_IDLE_AFTER
from .._serving.workers import GPoolPyWSGIWorker

__all__ = ["DEMO_APP", "ServeWorker", "run_gunicorn"]

DEMO_APP = "gpool._cli.demo:app"
SERVE_WORKER = "gpool._cli.gunicorn_app.ServeWorker"


class _ServeArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter, except that SIGINT (Ctrl-C) stops gracefully, like SIGTERM.

    ``gpool serve`` promises that Ctrl-C drains, whether it runs one process or many;
    under plain gunicorn SIGINT is the fast stop.
    """

    def handle_int(self) -> None:
        self.handle_term()


class ServeWorker(GPoolPyWSGIWorker):
    """The worker ``gpool serve --workers N`` runs: Ctrl-C in the terminal reaches every
    process of the group, and the worker leaves it to the master, which answers with
    SIGTERM, the graceful stop."""

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Application(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    """A gunicorn application from an import string and a dict of settings."""

    def __init__(self, app_uri: str, settings: dict[str, Any]) -> None:
        self._app_uri = app_uri
        self._settings = settings
        super().__init__()

    def run(self) -> None:
        _ServeArbiter(self).run()

    def load_config(self) -> None:
        for name, value in self._settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        # In each worker, after the fork and the monkey-patching. As gunicorn's own
        # command does, modules are found from the working directory.
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        return import_app(_with_attribute(self._app_uri))


def _with_attribute(app_uri: str) -> str:
    """Name the app's attribute: a module alone means its ``application``, else its
    ``app``, as in ``gpool serve`` (gunicorn would only try ``application``)."""
    if ":" in app_uri:
        return app_uri
    module = importlib.import_module(app_uri)
    return f"{app_uri}:{'application' if hasattr(module, 'application') else 'app'}"


def run_gunicorn(
    app: str | None,
    *,
    bind: str,
    workers: int,
    size: int,
    max_idle: float,
    min_idle: int,
    overflow: str,
    log_level: str,
    worker_class: str = SERVE_WORKER,
    graceful_timeout: float = 30.0,
    soft_deadline: float | None = None,
    hard_deadline: float | None = None,
    reclaim_idle_after: float = DEFAULT_RECLAIM_IDLE_AFTER,
    isolate: bool = True,
) -> int:
    """Serve *app* ("module:attribute" or "module"; None: gpool's demo app) with gunicorn.

    *size* is each worker's ``worker_connections``; *max_idle*, *min_idle*, *overflow*
    the deadlines and *isolate* reach its WorkerPool, *reclaim_idle_after* its server, as
    ``GPOOL_*`` variables. *graceful_timeout* is
    rounded up to whole seconds, gunicorn's unit. Blocks until the master exits and
    returns its exit status (0 after SIGTERM or SIGINT; both drain). Raises TypeError/ValueError,
    from WorkerPool, for pool options it would refuse, before starting anything.
    """
    # Refuse bad options here, once, rather than in every worker after the fork.
    WorkerPool(
        size,
        max_idle=max_idle,
        min_idle=min_idle,
        overflow=overflow,
        soft_deadline=soft_deadline,
        hard_deadline=hard_deadline,
        isolate=isolate,
    )
    check_seconds("reclaim_idle_after", reclaim_idle_after)
    environment = [
        f"GPOOL_MAX_IDLE={max_idle!r}",
        f"GPOOL_MIN_IDLE={min_idle}",
        f"GPOOL_OVERFLOW={overflow}",
        f"GPOOL_RECLAIM_IDLE_AFTER={reclaim_idle_after!r}",
        f"GPOOL_ISOLATE={int(isolate)}",
    ]
    if soft_deadline is not None:
        environment.append(f"GPOOL_SOFT_DEADLINE={soft_deadline!r}")
    if hard_deadline is not None:
        environment.append(f"GPOOL_HARD_DEADLINE={hard_deadline!r}")
    settings: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": worker_class,
        "worker_connections": size,
        "graceful_timeout": math.ceil(graceful_timeout),
        "loglevel": log_level,
        "raw_env": environment,
    }
    settings["when_ready"] = lambda arbiter: _announce(arbiter, workers, size, overflow)
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        # gunicorn >= 24 opens a control socket at a fixed path by default; two
        # `gpool serve` runs (or one beside a real gunicorn) would take it from each other.
        settings["control_socket_disable"] = True
    try:
        _Application(app or DEMO_APP, settings).run()
    except SystemExit as exc:  # the arbiter always ends with sys.exit()
        return _exit_status(exc.code)
    return 0


def _announce(arbiter: Any, workers: int, size: int, overflow: str) -> None:
    """The line ``gpool serve`` prints once listening, with the real port(s)."""
    for listener in arbiter.LISTENERS:
        host, port = listener.sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        print(
            f"gpool: serving {url} (pool size {size}, overflow {overflow}, {workers} workers; Ctrl-C to stop)",
            flush=True,
        )


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1
