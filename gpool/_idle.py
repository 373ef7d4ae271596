"""Keep-alive connections parked between requests, and how to hang them up.

A keep-alive connection holds its pool slot while it waits for the client's next
request. When the pool is full, those idle connections starve new clients: with
``worker_connections=3`` and three keep-alive clients, a fourth waits until one of
them times out. The server integrations register a connection here while its worker
waits for the first byte of a next request (nothing of it buffered), and take it out
as soon as bytes arrive. Closing such a connection cuts no request; HTTP/1.1 lets a
server close an idle persistent connection at any time.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

__all__ = ["IdleConnections"]

_log = logging.getLogger("gpool")

_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


class IdleConnections:
    """The idle keep-alive connections of one server, oldest first."""

    def __init__(self) -> None:
        # Insertion-ordered: the first key is the connection parked longest ago.
        self._parked: dict[object, Any] = {}
        self.draining = False
        """Set by :func:`gpool.drain`: no connection parks any more."""
        self.reclaimed = 0
        """Idle connections closed to free a slot for a new client."""

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, key: object, sock: Any) -> bool:
        """Note that *sock* waits for a next request. False while draining: then the
        caller should end the connection instead of waiting."""
        if self.draining:
            return False
        self._parked[key] = sock
        return True

    def unpark(self, key: object) -> None:
        self._parked.pop(key, None)

    def reclaim_oldest(self) -> bool:
        """Close the longest-idle connection that has no request arriving.

        True when a slot is about to free (that connection's worker sees end of
        stream and ends its task). Runs in the hub; never blocks.
        """
        for key, sock in list(self._parked.items()):
            state = _peek(sock)
            if state == "arriving":
                continue  # Its next request is here; its worker is about to wake.
            del self._parked[key]
            if state == "idle":
                _hang_up(sock)
                self.reclaimed += 1
                _log.debug("closed idle keep-alive connection %r to free a slot", key)
            return True
        return False

    def drain(self) -> int:
        """Stop parking and close every idle connection; return how many were closed."""
        self.draining = True
        closed = 0
        for key, sock in list(self._parked.items()):
            if _peek(sock) == "arriving":
                continue  # Served, with Connection: close.
            del self._parked[key]
            _hang_up(sock)
            closed += 1
        return closed


def _peek(sock: Any) -> str:
    """"idle" (nothing received), "arriving" (bytes waiting) or "gone" (EOF, error)."""
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the real one
    try:
        data = raw.recv(1, _PEEK_FLAGS)
    except BlockingIOError:
        return "idle"
    except ValueError:
        return "arriving"  # A socket that refuses flags (TLS): never cut it blind.
    except OSError:
        return "gone"
    return "arriving" if data else "gone"


def _hang_up(sock: Any) -> None:
    # shutdown, not close: the worker blocked on this socket sees end of stream and
    # ends its task the ordinary way, closing the socket itself.
    raw = getattr(sock, "_sock", sock)
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
