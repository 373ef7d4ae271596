"""``gpool serve --workers N``: a WSGI app in N gunicorn worker processes.

gunicorn's arbiter does the prefork, the supervision and the signals; each worker is
a :mod:`gpool.workers` class building its own WorkerPool. The pool and server options
travel to the workers as the ``GPOOL_*`` environment variables those classes read
(both written from the options tables, by :func:`gpool._serving.options.environment_for`),
through gunicorn's ``raw_env`` setting, so they behave exactly as under ``gunicorn -k``.

Which app to load, and how ``gpool serve`` announces itself, are ``gpool serve``'s
own rules: it hands them in as callables, so they are written once, in :mod:`.serve`.
"""

from __future__ import annotations

import math
import signal
import sys
from typing import Any, Callable

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

from .._core.options import POOL_OPTIONS, check_pool_options
from .._core.validate import check_count
from .._serving.options import SERVER_OPTIONS, check_server_options, environment_for
from .._serving.workers import GPoolPyWSGIWorker

__all__ = ["ServeWorker", "run_gunicorn"]

SERVE_WORKER = "gpool._cli.gunicorn_app.ServeWorker"
# The options a worker can be given: those with a GPOOL_* variable, and the size,
# which is gunicorn's worker_connections.
_POOL_NAMES = frozenset(option.name for option in POOL_OPTIONS if option.variable is not None) | {"size"}
_SERVER_NAMES = frozenset(option.name for option in SERVER_OPTIONS if option.variable is not None)
_SIZE = next(option for option in POOL_OPTIONS if option.name == "size")


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
    """A gunicorn application from a loading function and a dict of settings."""

    def __init__(self, load: Callable[[], Any], settings: dict[str, Any]) -> None:
        self._load = load
        self._settings = settings
        super().__init__()

    def run(self) -> None:
        _ServeArbiter(self).run()

    def load_config(self) -> None:
        for name, value in self._settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        # In each worker, after the fork and the monkey-patching.
        return self._load()


def run_gunicorn(
    load: Callable[[], Any],
    *,
    bind: str,
    workers: int,
    log_level: str,
    worker_class: str = SERVE_WORKER,
    graceful_timeout: float = 30.0,
    on_listening: Callable[[str, int], None] | None = None,
    **options: Any,
) -> int:
    """Serve the WSGI app *load()* returns (called in each worker, after the fork and
    the monkey-patching) with gunicorn.

    *options* are the pool's and the server's, by name, as in the options tables:
    ``size`` is each worker's ``worker_connections`` (default 1000), every other one
    with a ``GPOOL_*`` variable reaches the workers as that variable; left out, an
    option has its default (whatever the shell's environment says). *graceful_timeout*
    is rounded up to whole seconds, gunicorn's unit. *on_listening(host, port)* is
    called in the master for each listening socket once ready. Blocks until the master
    exits and returns its exit status (0 after SIGTERM or SIGINT; both drain). Raises
    TypeError/ValueError, as WorkerPool would, for options it refuses, before starting
    anything.
    """
    pool, server = _checked_options(options)
    settings: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": worker_class,
        "worker_connections": pool["size"],
        "graceful_timeout": math.ceil(graceful_timeout),
        "loglevel": log_level,
        "raw_env": environment_for({**pool, **server}),
    }
    if on_listening is not None:
        settings["when_ready"] = lambda arbiter: _announce(arbiter, on_listening)
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        # gunicorn >= 24 opens a control socket at a fixed path by default; two
        # `gpool serve` runs (or one beside a real gunicorn) would take it from each other.
        settings["control_socket_disable"] = True
    try:
        _Application(load, settings).run()
    except SystemExit as exc:  # the arbiter always ends with sys.exit()
        return _exit_status(exc.code)
    return 0


def _checked_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pool's and the server's options, checked here, once, rather than in every
    worker after the fork."""
    for name in options:
        if name not in _POOL_NAMES and name not in _SERVER_NAMES:
            raise TypeError(f"run_gunicorn() got an unexpected keyword argument {name!r}")
    pool = {name: value for name, value in options.items() if name in _POOL_NAMES}
    server = {name: value for name, value in options.items() if name in _SERVER_NAMES}
    # A worker's pool always has a bound: gunicorn's worker_connections.
    pool.setdefault("size", _SIZE.serving_default)
    check_count("size", pool["size"], minimum=1)
    return check_pool_options(**pool), check_server_options(**server)


def _announce(arbiter: Any, on_listening: Callable[[str, int], None]) -> None:
    for listener in arbiter.LISTENERS:
        host, port = listener.sock.getsockname()[:2]
        on_listening(host, port)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1
