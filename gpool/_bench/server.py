"""Child process: one gevent server with one spawn strategy.

``python -m gpool._bench.server --kind tcp|wsgi --strategy NAME`` starts a server on
127.0.0.1, port 0, and says ``PORT``. Commands on stdin, one per line:

- ``mark``: say ``MARK`` with the CPU seconds used so far (user and system) and the
  requests answered;
- ``probe``: say ``PROBE`` with the resident set size, the greenlets alive, the
  connections being served now and the pool's stats (for the memory scenario);
- ``trim``: return freed memory to the system (``malloc_trim``), say ``TRIM`` with the
  resident set size then;
- end of input: stop the server and say ``DONE`` with the final counters.

The two kinds of server:

- ``tcp``: ``StreamServer`` with a minimal HTTP responder: read up to the blank line
  that ends the request, send a fixed ``200 OK`` with ``Connection: close``, return
  (the server closes the socket). A client that connects and sends nothing keeps its
  handler waiting in ``recv``: that is how the memory scenario holds connections.
- ``wsgi``: ``gevent.pywsgi.WSGIServer`` with a hello-world application, no access log.
  Serves keep-alive and ``Connection: close`` clients alike.

Both listen with ``TCP_NODELAY`` set, which accepted sockets inherit on Linux, as a
production server sets it. Without it, pywsgi's two writes per response (the head,
then the body) meet the client's delayed ACK, and every keep-alive response waits
40 ms whatever the pool: the benchmark would measure the timer, not the server.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
from typing import Any, Callable

from .apps import BODY
from .child import die_with_parent, raise_fd_limit, rss_kb, say
from .sockets import listen
from .strategies import make_spawn

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + BODY
)


class Counters:
    """What the handlers count. Errors are counted, not raised, so no strategy pays for
    printing a traceback when a client hangs up."""

    __slots__ = ("active", "handled", "incomplete", "oserror")

    def __init__(self) -> None:
        self.handled = 0
        self.active = 0
        self.incomplete = 0
        self.oserror = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def tcp_handler(counts: Counters) -> Callable[[Any, Any], None]:
    response = RESPONSE

    def handle(sock: Any, _address: Any) -> None:
        counts.active += 1
        try:
            data = sock.recv(4096)
            while b"\r\n\r\n" not in data:
                if not data:
                    counts.incomplete += 1
                    return
                chunk = sock.recv(4096)
                if not chunk:
                    counts.incomplete += 1
                    return
                data += chunk
            sock.sendall(response)
            counts.handled += 1
        except OSError:
            counts.oserror += 1
        finally:
            counts.active -= 1

    return handle


def wsgi_app(counts: Counters) -> Callable[..., list[bytes]]:
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

    def app(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        counts.handled += 1
        start_response("200 OK", headers)
        return [BODY]

    return app


def count_greenlets() -> int:
    """Greenlet objects alive in this process (hub and main greenlet included)."""
    from greenlet import greenlet

    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet) and not obj.dead)


def trimmed_rss_kb() -> int:
    """RSS after a full collection and after asking malloc to return its free memory to
    the system: what is still live, as opposed to what the allocator keeps for reuse."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return rss_kb()


def pool_stats(spawn: Any) -> dict[str, Any] | None:
    if hasattr(spawn, "stats"):
        return dict(vars(spawn.stats()))
    if hasattr(spawn, "greenlets"):  # gevent.pool.Pool
        return {"busy": len(spawn)}
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpool._bench.server")
    parser.add_argument("--kind", choices=("tcp", "wsgi"), required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--alt", metavar="PATH")
    parser.add_argument("--max-idle", type=float)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--fds", type=int, default=1024, help="raise the open-files limit to this")
    args = parser.parse_args(argv)
    die_with_parent()
    raise_fd_limit(args.fds)

    import gevent
    from gevent.event import Event

    counts = Counters()
    spawn = make_spawn(args.strategy, args.alt, args.max_idle)
    listener = listen(args.backlog or 128, green=True)
    server: Any
    if args.kind == "tcp":
        from gevent.server import StreamServer

        server = StreamServer(listener, tcp_handler(counts), spawn=spawn)
    else:
        from gevent.pywsgi import WSGIServer

        server = WSGIServer(listener, wsgi_app(counts), spawn=spawn, log=None)
    server.start()

    stop = Event()
    stdin_fd = sys.stdin.fileno()
    pending = b""

    def on_command(command: str) -> None:
        if command == "mark":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            say("MARK", {"user_s": usage.ru_utime, "sys_s": usage.ru_stime, "handled": counts.handled})
        elif command == "probe":
            rss = rss_kb()  # before counting: gc.get_objects() builds a large list
            say(
                "PROBE",
                {
                    "rss_kb": rss,
                    "greenlets": count_greenlets(),
                    "active": counts.active,
                    "pool": pool_stats(spawn),
                },
            )
        elif command == "trim":
            say("TRIM", {"rss_kb": trimmed_rss_kb()})
        else:
            say("ERROR", {"unknown command": command})

    def on_stdin() -> None:
        nonlocal pending
        data = os.read(stdin_fd, 4096)
        if not data:
            stop.set()
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_command(line.decode().strip())

    watcher = gevent.get_hub().loop.io(stdin_fd, 1)
    watcher.start(on_stdin)
    say("PORT", {"port": server.server_port, "pid": os.getpid()})
    stop.wait()
    watcher.stop()
    server.stop(timeout=1)
    say("DONE", {**counts.as_dict(), "pool": pool_stats(spawn)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
