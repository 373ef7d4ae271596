"""The implementation of :mod:`gpool.workers`; its documentation is there."""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from typing import Any, Callable

import gevent
import gunicorn  # type: ignore[import-untyped]
from gevent import GreenletExit
from gevent.event import Event
from gevent.server import StreamServer
from greenlet import getcurrent
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.http.body import ChunkedReader, LengthReader  # type: ignore[import-untyped]
from gunicorn.http.wsgi import base_environ  # type: ignore[import-untyped]
from gunicorn.sock import ssl_context  # type: ignore[import-untyped]
from gunicorn.workers.base_async import AsyncWorker  # type: ignore[import-untyped]
from gunicorn.workers.ggevent import GeventWorker, PyWSGIHandler  # type: ignore[import-untyped]

from .. import __version__
from .._core.isolation import forget_request_state
from .._core.options import describe_pool
from .._core.pool import WorkerPool
from .drain import drain
from .keepalive import Connection, IdleConnections, socket_parts
from .options import SettingError, pool_options_from, server_options_from
from .reclaim import ReclaimingServer
from .reject import answer_503
from .wsgi import WSGIHandler, WSGIServer

__all__ = [
    "GPoolPyWSGIHandler",
    "GPoolPyWSGIServer",
    "GPoolPyWSGIWorker",
    "GPoolWebSocketWorker",
    "GPoolWorker",
]

SERVER_SOFTWARE = f"gpool/{__version__} gevent/{gevent.__version__} gunicorn/{gunicorn.__version__}"

# How often the main greenlet tells the master it is alive (gunicorn's workers do it
# every second; the master kills a worker silent for `timeout` seconds).
_HEARTBEAT = 1.0


# -- settings ---------------------------------------------------------------------------
# The GPOOL_* variables are declared, read and checked in .options (one table for the
# pool's options, one for the server's); a bad one is a SettingError.


class _SettledConfig:
    """A booted worker's view of gunicorn's ``Config``: each setting looked up once.

    gunicorn's parser and WSGI glue read about 20 settings a request, each through
    ``Config.__getattr__`` (0.5 µs on the Intel VM, 11 µs a request in all). A worker's
    settings are fixed once it serves (a reload starts new workers), so this view keeps
    each value (and each property computed from them) after its first lookup. ``set()``
    goes to the real ``Config`` and forgets every kept value; methods are the real
    ``Config``'s.
    """

    def __init__(self, config: Any) -> None:
        self.__dict__["_config"] = config

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__["_config"]
        value = getattr(config, name)
        # Settings, and properties computed from them (is_ssl, on every request).
        if name in config.settings or isinstance(getattr(type(config), name, None), property):
            self.__dict__[name] = value
        return value

    def set(self, name: str, value: Any) -> None:
        config = self.__dict__["_config"]
        config.set(name, value)
        self.__dict__.clear()  # properties may depend on it too
        self.__dict__["_config"] = config


# -- what both workers share ------------------------------------------------------------


class _PoolWorker(GeventWorker):  # type: ignore[misc]  # gunicorn ships no type information
    """gunicorn's gevent worker, with a WorkerPool per listener and a graceful drain.

    From ``GeventWorker`` it keeps monkey-patching, the parent check in ``notify``,
    the signal handling (SIGQUIT/SIGINT exit at once from a greenlet) and the
    keep-alive timeout; ``run`` is its own.
    """

    cfg: Any  # gunicorn's Config, then a _SettledConfig over it once serving

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Runs in the master, before the fork: plain attributes only.
        super().__init__(*args, **kwargs)
        self.pool_options: dict[str, Any] = {}
        self.server_options: dict[str, Any] = {}
        self.isolate_requests = True
        self._wake_on_exit: Any = None

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """In the master, before any worker starts: a bad ``GPOOL_*`` setting is one
        error line and exit status 3, however many workers were asked for."""
        inherited = getattr(super(), "check_config", None)
        if inherited is not None:
            inherited(cfg, log)
        environ = {**os.environ, **(cfg.env or {})}
        try:
            pool_options_from(environ, cfg.worker_connections)
            server_options_from(environ)
        except SettingError as exc:
            log.error("%s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def init_process(self) -> None:
        # Before patching and loading the app: a bad setting should cost nothing.
        # (The master checked already; the environment may differ after a reload.)
        # gunicorn applies --env to os.environ only later in this call, so merge it here.
        _route_gpool_log(self.log)
        environ = {**os.environ, **(self.cfg.env or {})}
        try:
            self.pool_options = pool_options_from(environ, self.worker_connections)
            self.server_options = server_options_from(environ)
        except SettingError as exc:
            self.log.error("%s", exc)
            # The master stops (rather than respawning forever) on this status.
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        self.isolate_requests = self.pool_options.get("isolate", True)
        super().init_process()

    def run(self) -> None:
        # Booted: from here on the settings stay as they are.
        self.cfg = _SettledConfig(self.cfg)
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            server = self.make_server(listener, self.make_pool())
            server.start()
            servers.append(server)
        pool = describe_pool({"size": self.worker_connections, **self.pool_options})
        server = ", ".join(f"{name}={value!r}" for name, value in self.server_options.items())
        # Also tells that signals are handled now (a signal sent earlier in the boot is lost).
        self.log.info(
            "Worker serving (pid: %s): %s per listener%s", self.pid, pool, f", server {server}" if server else ""
        )
        stop_requested = Event()
        self._wake_on_exit = gevent.get_hub().loop.async_()
        self._wake_on_exit.start(stop_requested.set)
        try:
            while self.alive:
                self.notify()
                if stop_requested.wait(_HEARTBEAT):
                    stop_requested.clear()
        finally:
            # Forgotten before it is closed: a signal may arrive in between.
            wake, self._wake_on_exit = self._wake_on_exit, None
            wake.close()
        self.drain(servers)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # Start draining now, not at the next heartbeat: the master's graceful_timeout
        # runs from the signal. A signal handler may interrupt any greenlet, even the
        # hub, so it only pokes an async watcher, which is safe anywhere.
        wake = self._wake_on_exit
        if wake is not None:
            wake.send()

    def make_pool(self) -> WorkerPool:
        return WorkerPool(self.worker_connections, **self.pool_options)

    def make_server(self, listener: Any, pool: WorkerPool) -> Any:
        raise NotImplementedError

    def ssl_args(self) -> dict[str, Any]:
        return {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}

    def drain(self, servers: list[Any]) -> None:
        """Graceful stop: :func:`gpool.drain`, telling the master we live meanwhile."""
        timeout = self.cfg.graceful_timeout
        self.log.info("Worker draining (pid: %s): in-flight requests get up to %s s", self.pid, timeout)
        heartbeat = gevent.spawn(self._heartbeat)
        try:
            drain(servers, timeout)
        finally:
            heartbeat.kill(block=False)

    def _heartbeat(self) -> None:
        # A restart (HUP, max_requests) drains while the master still watches the
        # heartbeat; without it a long drain would be killed as a hung worker.
        while True:
            self.notify()
            gevent.sleep(_HEARTBEAT)


def _route_gpool_log(log: Any) -> None:
    """Send the ``gpool`` logger's records to gunicorn's error log, unless configured."""
    gpool_log = logging.getLogger("gpool")
    error_log = getattr(log, "error_log", None)
    if gpool_log.handlers or not isinstance(error_log, logging.Logger):
        return
    for handler in error_log.handlers:
        gpool_log.addHandler(handler)
    gpool_log.setLevel(error_log.level)
    gpool_log.propagate = False


# -- StreamServer and gunicorn's HTTP parser --------------------------------------------


class _ReclaimingStreamServer(ReclaimingServer, StreamServer):  # type: ignore[misc]
    """gevent's StreamServer that ends a keep-alive connection for a waiting client.

    *serve* is called as ``serve(idle_connections, client, address)`` for each client.
    """

    def __init__(self, listener: Any, serve: Callable[[IdleConnections, Any, Any], None], **kwargs: Any) -> None:
        self._serve = serve
        super().__init__(listener, handle=self._serve_client, **kwargs)

    def _serve_client(self, client: Any, address: Any) -> None:
        self._serve(self.idle_connections, client, address)


class _GunicornConnection(Connection):
    """A connection served with gunicorn's parser, and the response it is writing."""

    __slots__ = ("next_read", "response")

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self.response: Any = None  # gunicorn's Response while a request is served
        self.next_read: _NextRequestRead | None = None

    def request_close(self) -> None:
        super().request_close()
        response = self.response
        if response is not None and not response.headers_sent:
            # Its headers will say "Connection: close", and gunicorn closes after it.
            # (Headers already sent said keep-alive: then the next response says it.)
            response.force_close()


class _NextRequestRead:
    """Stands in for the client socket in gunicorn's parser for one read: the first
    read of the next request, which is the keep-alive wait. The connection is parked
    during that read and unparked the moment it returns, before any byte of the
    request is parsed; then the parser reads the socket itself again."""

    __slots__ = ("connection", "connections", "pending", "raw", "sock", "unreader")

    def __init__(self, connections: IdleConnections, connection: Connection, sock: Any, unreader: Any) -> None:
        self.connections = connections
        self.connection = connection
        self.sock = sock
        self.unreader = unreader
        self.raw, self.pending = socket_parts(sock)

    def recv(self, size: int) -> bytes:
        sock = self.sock
        self.unreader.sock = sock
        data: bytes = self.connections.receive_next(self.connection, sock, self.raw, self.pending, "recv", size)
        return data


class GPoolWorker(_PoolWorker):
    """``-k gpool.workers.GPoolWorker``: a StreamServer on a WorkerPool, requests parsed
    by gunicorn (what ``-k gevent`` does with a ``gevent.pool.Pool``).

    The keep-alive loop is gunicorn's own; between requests, while gunicorn's parser
    waits for the first byte of the next one, the connection is parked in its
    server's ``idle_connections``, from where it may be ended for a new client or a
    drain without losing a request. gunicorn's keep-alive timeout still applies.
    """

    wsgi: Callable[..., Any]  # set by gunicorn's load_wsgi

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The connection each worker greenlet serves now, with its server's registry.
        self._connections: dict[Any, tuple[IdleConnections, _GunicornConnection]] = {}
        self._keepalive: float = 0

    def make_pool(self) -> WorkerPool:
        if self.pool_options.get("overflow") == "reject" and not self.cfg.is_ssl:
            # A plain StreamServer has no answer for clients turned away; give them
            # the pywsgi server's 503. (Over TLS they are just closed.)
            return WorkerPool(self.worker_connections, **self.pool_options, on_reject=_answer_busy)
        return super().make_pool()

    def make_server(self, listener: Any, pool: WorkerPool) -> Any:
        serve = partial(self._serve_connection, listener)
        server = _ReclaimingStreamServer(listener, serve, spawn=pool, **self.server_options, **self.ssl_args())
        if self.cfg.workers > 1:
            # As gunicorn's gevent worker: one accept per wake-up spreads clients
            # over the worker processes.
            server.max_accept = 1
        return server

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = self._seeing_responses(self.wsgi)
        # Read once: gunicorn looks settings up by name on every access.
        self._keepalive = self.cfg.keepalive

    def _seeing_responses(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """*app*, noting each request's gunicorn Response on its connection, so that a
        drain or a reclamation can make it the connection's last."""
        connections = self._connections

        def noting_response(environ: Any, start_response: Any) -> Any:
            entry = connections.get(getcurrent())
            response = getattr(start_response, "__self__", None)
            if entry is not None and response is not None:
                connection = entry[1]
                connection.response = response
                if connection.close_requested:
                    response.force_close()
            return app(environ, start_response)

        return noting_response

    def _serve_connection(self, listener: Any, connections: IdleConnections, client: Any, addr: Any) -> None:
        current = getcurrent()
        connection = connections.open(client, _GunicornConnection)
        self._connections[current] = (connections, connection)
        try:
            self.handle(listener, client, addr)
        finally:
            # The greenlet goes on to serve other connections.
            del self._connections[current]
            connections.close(connection)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        try:
            # Not GeventWorker's version: it hides whether the connection stays open.
            served: bool = AsyncWorker.handle_request(self, listener_name, req, sock, addr)
        except (GreenletExit, SystemExit):
            # A kill (the end of a drain) or a timeout abort, which gunicorn's gevent
            # worker swallows here. The response may be cut short: end the connection.
            raise StopIteration from None
        entry = self._connections.get(getcurrent())
        if entry is not None:
            entry[1].response = None
            if served:
                self._between_requests(entry[0], entry[1], req, sock)
        return served

    def _between_requests(
        self, connections: IdleConnections, connection: _GunicornConnection, req: Any, sock: Any
    ) -> None:
        """After a response on a keep-alive connection, before gunicorn's parser reads
        the next request: forget this request's state, read the rest of its body if the
        app did not, and park the connection during the parser's first read."""
        if self.isolate_requests:
            forget_request_state()
        keepalive = self._keepalive
        if not keepalive:
            return
        if not _body_consumed(req):
            # gunicorn's parser would read it first anyway, under the same timeout;
            # read now, so that the connection parks only for the next request.
            with gevent.Timeout(keepalive, False):
                while req.body.read(8192):
                    pass
            if not _body_consumed(req):
                raise StopIteration()  # the client stopped sending its body
        unreader = req.unreader
        next_read = connection.next_read
        if next_read is None or next_read.unreader is not unreader:
            if not hasattr(unreader, "sock"):
                return  # not a socket reader: nothing to park on
            next_read = connection.next_read = _NextRequestRead(connections, connection, sock, unreader)
        # gunicorn's unreader keeps its buffer's position at the end: tell() is its size.
        if unreader.buf.tell() or (next_read.pending is not None and next_read.pending()):
            return  # the next request has (partly) arrived: not idle
        unreader.sock = next_read


def _body_consumed(req: Any) -> bool:
    """True when the app (or gunicorn) has read the request's body to its end."""
    reader = getattr(getattr(req, "body", None), "reader", None)
    if isinstance(reader, LengthReader):
        return bool(reader.length == 0)
    if isinstance(reader, ChunkedReader):
        return reader.parser is None
    return False  # an unknown reader: never take the connection for idle


def _answer_busy(sock: Any, address: Any) -> None:
    """``on_reject`` for GPoolWorker: answer 503 like the pywsgi server does.

    Called in the hub, where nothing may block, and the server closes *sock* as soon
    as this returns: the answer goes over a duplicate, from a bare greenlet.
    """
    try:
        spare = sock.dup()
    except OSError:
        return  # gone already
    gevent.spawn_raw(answer_503, _close_socket, (spare, address))


def _close_socket(sock: Any, _address: Any) -> None:
    sock.close()


# -- pywsgi -----------------------------------------------------------------------------


class GPoolPyWSGIHandler(WSGIHandler, PyWSGIHandler):  # type: ignore[misc]
    """gpool's pywsgi handler (parks idle keep-alive connections, ``Connection: close``
    when draining) with gunicorn's access log and ``environ`` additions."""


class GPoolPyWSGIServer(WSGIServer):
    """:class:`gpool.wsgi.WSGIServer` serving with :class:`GPoolPyWSGIHandler`."""

    handler_class = GPoolPyWSGIHandler


class GPoolPyWSGIWorker(_PoolWorker):
    """``-k gpool.workers.GPoolPyWSGIWorker``: gevent's pywsgi on a WorkerPool (what
    ``-k gevent_pywsgi`` does with a ``gevent.pool.Pool``).

    As with ``gevent_pywsgi``, pywsgi keeps connections alive by its own rules and
    gunicorn's ``keepalive`` does not apply; idle keep-alive connections are closed
    when the pool is full and a new client waits.
    """

    server_class = GPoolPyWSGIServer
    wsgi_handler = GPoolPyWSGIHandler

    def make_server(self, listener: Any, pool: WorkerPool) -> Any:
        environ = base_environ(self.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": SERVER_SOFTWARE})
        return self.server_class(
            listener,
            application=self.wsgi,
            spawn=pool,
            log=self.log,
            handler_class=self.wsgi_handler,
            environ=environ,
            **self.server_options,
            **self.ssl_args(),
        )


# -- WebSockets (gevent-websocket) ------------------------------------------------------

_websocket_handler_class: type[GPoolPyWSGIHandler] | None = None


def _websocket_handler() -> type[GPoolPyWSGIHandler]:
    """:class:`GPoolPyWSGIHandler` with gevent-websocket's upgrade
    (:class:`gpool.websocket.WebSocketHandler`), built on first use so that this module
    imports without gevent-websocket. Raises ImportError naming the extra to install."""
    global _websocket_handler_class
    if _websocket_handler_class is None:
        from .websocket import WebSocketHandler

        class GPoolWebSocketHandler(WebSocketHandler, GPoolPyWSGIHandler):
            """gpool's WebSocket handler with gunicorn's access log and ``environ``."""

            # gunicorn's access log for every response, the 101 of a WebSocket too
            # (logged when the socket ends), not gevent-websocket's own logger.
            log_request = PyWSGIHandler.log_request

        _websocket_handler_class = GPoolWebSocketHandler
    return _websocket_handler_class


def _websocket_handler_or_exit(log: Any) -> type[GPoolPyWSGIHandler]:
    try:
        return _websocket_handler()
    except ImportError as exc:
        log.error("%s", exc)
        sys.exit(Arbiter.WORKER_BOOT_ERROR)


class GPoolWebSocketWorker(GPoolPyWSGIWorker):
    """``-k gpool.workers.GPoolWebSocketWorker``: :class:`GPoolPyWSGIWorker` serving
    WebSockets with gevent-websocket (what its ``GeventWebSocketWorker`` does with
    ``-k gevent_pywsgi``). Upgraded connections detach from the pool and are left out
    of keep-alive reclamation and drains until the graceful timeout; plain requests
    are served as by ``GPoolPyWSGIWorker``. Needs ``pip install 'gpool[websocket]'``:
    without it the master exits (status 3) after one error line."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        _websocket_handler_or_exit(log)

    def init_process(self) -> None:
        self.wsgi_handler = _websocket_handler_or_exit(self.log)
        super().init_process()
