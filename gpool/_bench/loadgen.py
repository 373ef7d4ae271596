"""Child process: the built-in load generator, for machines without ``wrk``.

Plain sockets and ``select.epoll`` (no gevent: the client must not share the code it
measures). Bounded in every direction: a fixed number of connections, a deadline it
keeps even if the parent dies, and a cap on connects in flight.

Modes:

- ``churn``: each of ``--connections`` slots opens a connection, sends one request with
  ``Connection: close``, reads the response to end-of-file, and opens the next one;
- ``keepalive``: each slot keeps one connection and sends request after request on it,
  reading each response by its ``Content-Length``;
- ``hold``: open ``--connections`` connections, send nothing, say ``HELD``; on ``close``
  (or end of input) on stdin close them all, say ``CLOSED`` and exit.

``churn`` and ``keepalive`` say ``RESULT`` with the responses counted, errors and a
latency histogram (connect to last byte for churn, request to response for keep-alive).
The parent runs one of these processes per client CPU and adds up their results.
"""

from __future__ import annotations

import argparse
import errno
import select
import socket
import sys
import time
from collections import Counter
from typing import Any

from .child import die_with_parent, raise_fd_limit, say
from .stats import latency_bucket

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)


def _request(port: int, close: bool) -> bytes:
    lines = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Conn:
    __slots__ = ("buf", "sock", "started", "want")

    def __init__(self, sock: socket.socket, started: float) -> None:
        self.sock = sock
        self.started = started
        self.buf = b""
        self.want = -1  # keep-alive: bytes of the current response, once its head is in


def _response_length(buf: bytes) -> int:
    """Bytes of the response at the start of *buf*; -1 while its head is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return -1
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return end + 4 + int(value)
    return end + 4


def run_load(port: int, connections: int, duration: float, keepalive: bool) -> dict[str, Any]:
    """Drive the server at *port* for *duration* seconds; the counts and latencies."""
    request = _request(port, close=not keepalive)
    addr = ("127.0.0.1", port)
    poller = select.epoll()
    conns: dict[int, _Conn] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    ok = bad = 0
    now = time.perf_counter
    epollin, epollout = select.EPOLLIN, select.EPOLLOUT

    def open_conn() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = _Conn(sock, now())
        code = sock.connect_ex(addr)
        fd = sock.fileno()
        conns[fd] = conn
        if code == 0:
            sock.send(request)
            poller.register(fd, epollin)
        elif code in _IN_PROGRESS:
            poller.register(fd, epollout)
        else:
            errors[errno.errorcode.get(code, str(code))] += 1
            del conns[fd]
            sock.close()

    def drop(fd: int, conn: _Conn) -> None:
        poller.unregister(fd)
        del conns[fd]
        conn.sock.close()

    started = now()
    deadline = started + duration
    for _ in range(connections):
        open_conn()
    while True:
        t = now()
        if t >= deadline:
            break
        for fd, event in poller.poll(deadline - t):
            conn = conns[fd]
            sock = conn.sock
            try:
                if event & epollout:
                    sock.send(request)
                    poller.modify(fd, epollin)
                    continue
                data = sock.recv(65536)
            except OSError as exc:
                errors[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1
                drop(fd, conn)
                open_conn()
                continue
            if keepalive:
                if not data:
                    errors["eof"] += 1
                    drop(fd, conn)
                    open_conn()
                    continue
                conn.buf += data
                if conn.want < 0:
                    conn.want = _response_length(conn.buf)
                if 0 <= conn.want <= len(conn.buf):
                    t = now()
                    latencies.append(t - conn.started)
                    if conn.buf.startswith(b"HTTP/1.1 200"):
                        ok += 1
                    else:
                        bad += 1
                    conn.buf, conn.want, conn.started = b"", -1, t
                    sock.send(request)
            elif data:
                conn.buf += data
            else:  # end of file: the whole response is in
                latencies.append(now() - conn.started)
                if conn.buf.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    bad += 1
                drop(fd, conn)
                open_conn()
    elapsed = now() - started
    for conn in conns.values():
        conn.sock.close()
    poller.close()
    histogram = Counter(latency_bucket(seconds * 1e6) for seconds in latencies)
    return {
        "requests": ok,
        "non_2xx": bad,
        "elapsed_s": elapsed,
        "errors": dict(errors),
        "latency_hist": dict(histogram),
    }


def hold(port: int, connections: int, in_flight: int = 200, timeout: float = 60.0) -> int:
    """Open *connections* idle connections (at most *in_flight* connects pending at a
    time, so the server's listen queue never overflows into SYN retries), say HELD,
    close them all on command. Returns the exit status."""
    addr = ("127.0.0.1", port)
    poller = select.epoll()
    pending: dict[int, socket.socket] = {}
    held: list[socket.socket] = []
    failed = 0
    deadline = time.monotonic() + timeout
    opened = 0
    while len(held) + failed < connections:
        if time.monotonic() > deadline:
            say("ERROR", {"held": len(held), "wanted": connections})
            return 1
        while opened < connections and len(pending) < in_flight:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            opened += 1
            code = sock.connect_ex(addr)
            if code == 0:
                held.append(sock)
            elif code in _IN_PROGRESS:
                pending[sock.fileno()] = sock
                poller.register(sock.fileno(), select.EPOLLOUT)
            else:
                failed += 1
                sock.close()
        for fd, _event in poller.poll(1.0):
            sock = pending.pop(fd)
            poller.unregister(fd)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(sock)
            else:
                failed += 1
                sock.close()
    poller.close()
    say("HELD", {"held": len(held), "failed": failed})
    sys.stdin.readline()  # "close", or end of input
    for sock in held:
        sock.close()
    say("CLOSED", {"closed": len(held)})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpool._bench.loadgen")
    parser.add_argument("mode", choices=("churn", "keepalive", "hold"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    die_with_parent()
    raise_fd_limit(args.connections + 64)
    if args.mode == "hold":
        return hold(args.port, args.connections)
    say("RESULT", run_load(args.port, args.connections, args.duration, keepalive=args.mode == "keepalive"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
