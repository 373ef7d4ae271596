"""``gpool serve [MODULE:APP]``: run a WSGI app on pywsgi with a WorkerPool.

One process by default: :class:`gpool.wsgi.WSGIServer` with ``spawn=WorkerPool(...)``,
monkey-patched first so the app's blocking standard-library calls cooperate. With
``--workers N`` (N > 1) the app runs in N gunicorn worker processes with gpool's worker
class instead. SIGINT or SIGTERM drains (:func:`gpool.drain`) and exits 0.

Every problem the user can fix (a bad flag value, an app that does not load, a port
in use) is one line on stderr and exit status 2.

Nothing here imports the user's app, patches or starts anything before the command
line has been parsed and checked. (gevent itself is imported by then: the ``gpool``
package needs it. Importing it patches nothing and creates no hub.)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import re
import signal
import socket
import sys
from functools import partial
from typing import Any, Callable, NamedTuple

from .._core.options import POOL_OPTIONS, Option, check_pool_options, describe_pool
from .._core.pool import WorkerPool
from .._core.validate import check_count
from .._serving.drain import drain
from .._serving.options import SERVER_OPTIONS, check_server_options
from .demo import DEMO_APP

__all__ = ["AppLoadError", "add_serve_parser", "load_app"]

_log = logging.getLogger("gpool")

_PROG = "gpool serve"
# Appended to errors in flag values, as the parser appends it to its own.
_HINT = f" (see {_PROG} --help)"
# Tried in this order when MODULE:APP names only the module (gunicorn's name first).
_DEFAULT_ATTRIBUTES = ("application", "app")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Clients wait in the listen queue while every slot is busy (overflow="backlog"); the
# kernel caps it at net.core.somaxconn.
_BACKLOG = 1024
# The pool's and the server's options that have a flag, from the options tables.
_POOL_FLAGS = tuple(option for option in POOL_OPTIONS if option.flag)
_SERVER_FLAGS = tuple(option for option in SERVER_OPTIONS if option.flag)
# Option names, as they start the options' TypeError/ValueError messages, and the
# flags that set them.
_FLAGS = {option.name: option.flag for option in (*_POOL_FLAGS, *_SERVER_FLAGS) if option.flag}
_OPTION_NAMES = re.compile(r"\b(?:" + "|".join(_FLAGS) + r")\b")


class Address(NamedTuple):
    host: str
    port: int

    def host_port(self) -> str:
        """``HOST:PORT``, an IPv6 literal in brackets (as in a URL, and as gunicorn wants it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self) -> str:
        return f"http://{self.host_port()}"


class _Refused(Exception):
    """A problem the user can fix: reported as one line, exit status 2."""


class AppLoadError(Exception):
    """``MODULE:APP`` does not name a loadable WSGI callable; the message says why."""


# -- the command line ---------------------------------------------------------------


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``gpool`` command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run a WSGI app on pywsgi with a WorkerPool",
        description=(
            "Serve a WSGI app with gevent's pywsgi on a gpool WorkerPool. With no MODULE:APP, "
            "a demo app answers / (a greeting), /stats (the pool's stats as JSON) and /metrics "
            "(Prometheus text; needs gpool[prometheus]). SIGINT (Ctrl-C) or SIGTERM stops "
            "accepting, lets in-flight requests finish for up to --graceful-timeout seconds, "
            "then exits 0; a second signal kills what still runs. A bad flag, an app that "
            "cannot be loaded or an address that cannot be bound exit 2."
        ),
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="MODULE:APP",
        help="the WSGI callable, imported with the current directory on sys.path; MODULE alone "
        "means its 'application', else its 'app' (default: the demo app)",
    )
    parser.add_argument(
        "--bind",
        type=parse_bind,
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="address to listen on ([::1]:PORT for IPv6); port 0 picks a free one (default: %(default)s)",
    )
    for option in (*_POOL_FLAGS, *_SERVER_FLAGS):
        _add_option_flag(parser, option)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes; N > 1 runs N gunicorn workers of gpool's pywsgi worker class "
        "(needs gpool[gunicorn]) (default: %(default)s)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long in-flight requests may take to finish before they "
        "are killed (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=_LOG_LEVELS,
        type=str.lower,
        help="threshold of the 'gpool' logger, written to stderr. The access log (one line per "
        "request) is its child 'gpool.access' at INFO, so 'warning' and above hide it; "
        "your app's own loggers are left as the app configures them (default: %(default)s)",
    )
    parser.add_argument(
        "--no-monkey-patch",
        action="store_true",
        help="do not call gevent.monkey.patch_all() before loading the app (single process "
        "only): blocking calls in the app then hold up every request",
    )
    parser.set_defaults(run=run)
    return parser


def _add_option_flag(parser: argparse.ArgumentParser, option: Option) -> None:
    """The flag of a pool or server option, as its table entry declares it: a switch
    for a bool (turning its default around), else a value parsed by the table's parser."""
    flag, default = option.flag, option.serving_default
    assert flag is not None, option
    if isinstance(default, bool):
        parser.add_argument(
            flag,
            dest=option.name,
            action="store_false" if default else "store_true",
            help=f"{option.help} (default: {option.describe(default)})",
        )
        return
    assert option.parse is not None, f"{flag} needs a parser"
    parser.add_argument(
        flag,
        dest=option.name,
        type=option.parse,
        default=default,
        metavar=option.metavar,
        help=f"{option.help} (default: {option.describe(default)})",
    )


def parse_bind(text: str) -> Address:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) as an :class:`Address`; argparse's ``type=``."""
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port_text.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, got {port}")
    return Address(host, port)


def run(args: argparse.Namespace) -> int:
    """``gpool serve``'s entry point: the exit status."""
    try:
        _check_flags(args)
        pool_options, server_options = _options(args)
        if args.workers > 1:
            # Each gunicorn worker builds its own pool, from the same options.
            return _run_gunicorn(args, pool_options, server_options)
        return _serve(args, pool_options, server_options)
    except _Refused as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _check_flags(args: argparse.Namespace) -> None:
    """The checks that neither argparse's ``type=`` nor the options tables make."""
    try:
        # WorkerPool would also take size=None, which no flag value can mean: say so.
        check_count("--size", args.size, minimum=1)
        check_count("--workers", args.workers, minimum=1)
    except ValueError as exc:
        raise _Refused(f"{exc}{_HINT}") from None
    timeout = args.graceful_timeout
    if not math.isfinite(timeout) or timeout < 0:
        raise _Refused(f"--graceful-timeout must be a finite number of seconds >= 0, got {timeout}{_HINT}")


def _options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pool's and the server's options from the flags, checked by the tables' rules
    (those of WorkerPool itself), a refusal naming the flags.

    Only the options that have a flag: the rest keep their defaults, here as in the
    gunicorn workers.
    """
    try:
        pool = check_pool_options(**_flag_values(args, _POOL_FLAGS))
        server = check_server_options(**_flag_values(args, _SERVER_FLAGS))
    except (TypeError, ValueError) as exc:
        raise _Refused(f"{_flag_message(str(exc))}{_HINT}") from None
    return pool, server


def _flag_values(args: argparse.Namespace, options: tuple[Option, ...]) -> dict[str, Any]:
    return {option.name: getattr(args, option.name) for option in options}


def _flag_message(message: str) -> str:
    """Name the flags rather than the keyword arguments: "--max-idle must be ..."."""
    return _OPTION_NAMES.sub(lambda match: _FLAGS[match.group(0)], message)


def _banner(address: Address, size: int, overflow: str, workers: int = 1) -> str:
    """The line ``gpool serve`` prints once listening (one per listener)."""
    processes = f", {workers} workers" if workers > 1 else ""
    return f"gpool: serving {address.url()} (pool size {size}, overflow {overflow}{processes}; Ctrl-C to stop)"


# -- loading the app ------------------------------------------------------------------


def load_app(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:ATTRIBUTE`` (or ``MODULE``) with the current directory first on
    ``sys.path``, as gunicorn does; raise :class:`AppLoadError` saying what went wrong."""
    module_name, colon, attribute = spec.partition(":")
    if not _dotted_name(module_name) or (colon and not _dotted_name(attribute)):
        raise AppLoadError("expected MODULE or MODULE:ATTRIBUTE, with Python names")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = _import(module_name)
    if colon:
        candidates: tuple[str, ...] = (attribute,)
    else:
        candidates = tuple(name for name in _DEFAULT_ATTRIBUTES if hasattr(module, name))
        if not candidates:
            raise AppLoadError(f"module {module_name!r} has neither 'application' nor 'app'; use {module_name}:NAME")
    app = _lookup(module, module_name, candidates[0])
    if not callable(app):
        raise AppLoadError(f"{module_name}:{candidates[0]} is not callable (it is of type {type(app).__name__})")
    return app  # type: ignore[no-any-return]  # whatever callable the user named


def _dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The module (or a package above it) is missing, or the user's module imports
        # something missing: only the first is "not found".
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            _log.debug("importing %r", module_name, exc_info=True)
            raise AppLoadError(f"no module named {missing!r} (looked in {os.getcwd()} and sys.path)") from None
        raise _failed_import(module_name, exc) from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything while it loads
        raise _failed_import(module_name, exc) from None


def _failed_import(module_name: str, exc: BaseException) -> AppLoadError:
    # The traceback is worth having but is not one line: it goes to the log at DEBUG.
    _log.debug("importing %r failed", module_name, exc_info=exc)
    detail = (str(exc).strip().splitlines() or [""])[0]
    cause = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return AppLoadError(f"importing {module_name!r} raised {cause} (--log-level debug shows the traceback)")


def _lookup(module: Any, module_name: str, attribute: str) -> Any:
    found = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return found


def _load(spec: str) -> Callable[..., Any]:
    try:
        return load_app(spec)
    except AppLoadError as exc:
        raise _Refused(f"cannot load app {spec!r}: {exc}") from None


# -- one process ----------------------------------------------------------------------


def _serve(args: argparse.Namespace, pool_options: dict[str, Any], server_options: dict[str, Any]) -> int:
    # Building a pool is safe before monkey-patching: it creates no gevent object
    # until it first runs a task.
    pool = WorkerPool(**pool_options)
    if not args.no_monkey_patch:
        # Before the app (and anything it imports) is loaded, as gunicorn's gevent
        # worker does, so the app's sockets, locks and sleeps are gevent's.
        from gevent import monkey

        monkey.patch_all()
    _configure_logging(args.log_level)
    app = _load(args.app or DEMO_APP)
    server = _listen(args.bind, app, pool, server_options)
    stop = _StopSignal(pool)
    handlers = stop.install()
    try:
        _log.info("serving (pid: %s): %s, server %s", os.getpid(), describe_pool(pool_options), _words(server_options))
        address = Address(server.server_host, server.server_port)
        print(_banner(address, pool_options["size"], pool_options["overflow"]), flush=True)
        stop.requested.wait()
        _log.info("stopping: draining for up to %.1f s (a second signal kills what still runs)", args.graceful_timeout)
        drain(server, args.graceful_timeout)
    finally:
        for handler in handlers:
            handler.cancel()
        pool.close()
    return 0


def _words(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in options.items())


def _configure_logging(level_name: str) -> None:
    """The ``gpool`` logger (and the access log under it) to stderr at *level_name*."""
    level = getattr(logging, level_name.upper())
    logger = logging.getLogger("gpool")
    logger.setLevel(level)
    logger.addHandler(_stderr_handler("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Our own handler, so an app that configures the root logger does not print ours twice.
    logger.propagate = False
    access = logging.getLogger("gpool.access")
    # pywsgi's access lines carry their own timestamp and client address.
    access.addHandler(_stderr_handler("%(message)s"))
    access.propagate = False


def _stderr_handler(fmt: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def _listen(address: Address, app: Callable[..., Any], pool: WorkerPool, server_options: dict[str, Any]) -> Any:
    from .._serving.wsgi import WSGIServer

    try:
        server = WSGIServer(
            _listener(address),
            app,
            spawn=pool,
            # Loggers, which pywsgi wraps: access lines at INFO, its protocol errors at ERROR.
            log=logging.getLogger("gpool.access"),
            error_log=logging.getLogger("gpool.wsgi"),
            **server_options,
        )
        server.start()
    except OSError as exc:
        reason = _os_reason(exc, address)
        if address.port < 1024 and isinstance(exc, PermissionError):
            reason += " (ports below 1024 need privileges)"
        raise _Refused(f"cannot listen on {address.host}:{address.port}: {reason}") from None
    return server


def _listener(address: Address) -> Any:
    """A bound, listening gevent socket, closed again if that fails (gevent's own
    helper leaves the socket open when bind() fails)."""
    from gevent import socket as gsocket

    sock = gsocket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            # Restart at once on the same port, past connections in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # pywsgi writes a response's head and body separately; with Nagle on, a
        # keep-alive client's delayed ACK holds every response back ~40 ms. Accepted
        # sockets inherit the option on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((address.host, address.port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _os_reason(exc: OSError, address: Address) -> str:
    """The reason alone: gevent adds the address to its messages, and we print it anyway."""
    if exc.errno and not isinstance(exc, socket.gaierror):  # gaierror's codes are not errnos
        return os.strerror(exc.errno)
    return str(exc.strerror or exc).removesuffix(f": {(address.host, address.port)!r}")


class _StopSignal:
    """SIGINT and SIGTERM: the first asks the main greenlet to drain, a second kills
    the requests still running so the drain ends now."""

    def __init__(self, pool: WorkerPool) -> None:
        from gevent.event import Event

        self._pool = pool
        self.requested = Event()

    def install(self) -> list[Any]:
        import gevent

        return [gevent.signal_handler(signum, self._received, signum) for signum in (signal.SIGINT, signal.SIGTERM)]

    def _received(self, signum: int) -> None:
        # Runs in a greenlet of its own; the main greenlet does the draining.
        if not self.requested.is_set():
            _log.debug("received %s", signal.Signals(signum).name)
            self.requested.set()
            return
        _log.warning("received %s again: killing the requests still running", signal.Signals(signum).name)
        self._pool.kill(block=False)


# -- several processes ------------------------------------------------------------------


def _gunicorn_missing(workers: int, exc: ImportError) -> str:
    """What to install when gunicorn or something its gevent worker imports is missing:
    the module the ImportError names, not an extra that may already be installed."""
    missing = (exc.name or "").partition(".")[0]
    if missing == "gunicorn":
        return f"--workers {workers} needs gunicorn, which is not installed: pip install 'gpool[gunicorn]'"
    if missing:
        return (
            f"--workers {workers}: gunicorn's worker needs the module {missing!r}, which is not installed "
            f"({exc}): pip install {missing}"
        )
    return f"--workers {workers}: gunicorn did not import ({exc}); gpool needs gunicorn>=23: pip install -U gunicorn"


def _run_gunicorn(args: argparse.Namespace, pool_options: dict[str, Any], server_options: dict[str, Any]) -> int:
    """N worker processes through gunicorn's arbiter and gpool's worker class.

    No monkey-patching here, in the master: gunicorn's gevent-based workers patch
    after the fork, before they load the app (with :func:`load_app`, as one process does).
    """
    try:
        # unused-ignore: the module is written alongside this one and may be missing.
        from .gunicorn_app import run_gunicorn  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise _Refused(_gunicorn_missing(args.workers, exc)) from None
    status: int = run_gunicorn(
        partial(load_app, args.app or DEMO_APP),
        bind=args.bind.host_port(),
        workers=args.workers,
        log_level=args.log_level,
        graceful_timeout=args.graceful_timeout,
        on_listening=partial(_announce, pool_options["size"], pool_options["overflow"], args.workers),
        # The options that have a flag, the same ones one process is built from.
        **{option.name: pool_options[option.name] for option in _POOL_FLAGS},
        **{option.name: server_options[option.name] for option in _SERVER_FLAGS},
    )
    return status


def _announce(size: int, overflow: str, workers: int, host: str, port: int) -> None:
    """In gunicorn's master, once a listener is ready: the line one process prints too."""
    print(_banner(Address(host, port), size, overflow, workers), flush=True)
