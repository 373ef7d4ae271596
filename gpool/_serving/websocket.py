"""The implementation of :mod:`gpool.websocket`; its documentation is there."""

from __future__ import annotations

import logging

from gevent import pywsgi

from .._core.errors import PoolFull
from .._core.pool import current_pool
from .wsgi import WSGIHandler

try:
    from geventwebsocket.handler import WebSocketHandler as _UpgradingHandler
except ImportError as exc:
    raise ImportError(
        f"gpool.websocket needs gevent-websocket ({exc}); install it with: pip install 'gpool[websocket]'"
    ) from exc

__all__ = ["WebSocketHandler"]

_log = logging.getLogger("gpool")


class WebSocketHandler(WSGIHandler, _UpgradingHandler):  # type: ignore[misc]  # gevent-websocket ships no types
    """gevent-websocket's ``WebSocketHandler`` that takes part in gpool's keep-alive
    loop for plain requests and detaches from the pool once upgraded.

    gpool's side (:class:`gpool.wsgi.WSGIHandler`) supplies the connection's life
    (``__init__``, ``handle``, ``read_requestline``, ``finalize_headers``);
    gevent-websocket's supplies ``run_application``, which upgrades a request or
    hands it to the app. Derive from this class to customise either.

    Access-log lines go to the server's ``log``, as with pywsgi's handler (not to
    gevent-websocket's logger); a WebSocket's line, status 101, is written when it ends.
    """

    log_request = pywsgi.WSGIHandler.log_request

    def run_websocket(self) -> None:
        # gevent-websocket calls this once the 101 response has gone out, before the
        # app gets the socket.
        self._become_stream()
        super().run_websocket()

    def _become_stream(self) -> None:
        """This connection serves no more HTTP requests: take it out of the server's
        keep-alive bookkeeping, and give its pool slot back."""
        self._leave_idle_connections()
        pool = current_pool()
        if pool is None:
            return  # gevent's Pool or no pool at all: nothing to detach from
        try:
            pool.detach()
        except PoolFull as exc:
            _log.warning("WebSocket from %s keeps its pool slot: %s", self.client_address, exc)
