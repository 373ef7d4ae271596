"""How the benchmark opens a listening socket, in the harness and in its servers alike."""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["listen"]


def listen(backlog: int, *, green: bool) -> Any:
    """A socket listening on 127.0.0.1 on a free port, with TCP_NODELAY (accepted
    sockets inherit it on Linux: pywsgi writes head and body apart, and Nagle would
    hold each keep-alive response back for the client's delayed ACK).

    *green* picks gevent's socket (a server of the benchmark) over the standard one
    (the harness, which hands the listener to gunicorn by file descriptor).
    """
    if green:
        from gevent import socket as module
    else:
        module = socket
    sock = module.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
