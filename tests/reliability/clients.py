"""The reliability suite's load: many short connections from concurrent clients.

Run as a separate process (``python clients.py --port P ...``), so the server under
test has its process to itself; prints one JSON summary on stdout.

Protocol (see ``harness.py``): a client sends ``<kind> <id>\\n`` and reads until EOF.
Kinds, each a fault the server must survive:

- ``ok``: a well-behaved client; the reply must be exactly ``reply(id)``;
- ``raise``: the handler raises; the client must see EOF and no reply;
- ``hang``: the handler waits forever and is killed at the pool's hard deadline;
  EOF, no reply;
- ``reset``: the client sends half a request, then resets the connection (RST);
- ``silent``: the client sends its request line, then nothing more while the
  handler waits for the rest; the handler's read timeout ends it: EOF, no reply.

``--until-refused`` keeps clients connecting until the server stops listening (for
``server.stop()`` under load); requests then cut by the stop count as ``cut``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket as stdlib_socket
import struct
import sys
from collections import Counter
from typing import Any

import gevent
import gevent.event
from gevent import socket

REPLY_PADDING = 1000


def reply(ident: int) -> bytes:
    """The full reply to ``ok <ident>``: long enough to arrive in several pieces."""
    return b"ok %d " % ident + b"x" * REPLY_PADDING + b"\n"


def kind_of(index: int, mix: dict[str, int]) -> str:
    """The kind of the *index*-th connection: a fixed, interleaved pattern, so every
    kind is spread over the whole run. *mix* gives each fault kind's count per 100."""
    slot = index % 100
    for kind, per_hundred in mix.items():
        if slot < per_hundred:
            return kind
        slot -= per_hundred
    return "ok"


def _read_all(sock: Any) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _one(port: int, ident: int, kind: str, timeout: float) -> str:
    """Make one connection of *kind*; return its outcome."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return "refused"
        if kind == "reset":
            sock.sendall(b"ok %d" % ident)  # no newline: half a request
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset"
        sock.sendall(b"%s %d\n" % (kind.encode(), ident))
        data = _read_all(sock)
    except socket.timeout:
        return "timeout"  # the server left this client hanging: always a failure
    except (ConnectionResetError, BrokenPipeError):
        return "cut" if kind == "ok" else "closed"
    finally:
        sock.close()
    if kind == "ok":
        if data == reply(ident):
            return "ok"
        return "cut" if reply(ident).startswith(data) else "wrong"
    return "closed" if not data else "wrong"


def run(
    port: int, connections: int, concurrency: int, mix: dict[str, int], timeout: float, until_refused: bool
) -> dict[str, Any]:
    """Connections from *concurrency* clients; counts of ``"kind:outcome"``, and the
    first connection number seen for each, to look up in the server's records."""
    numbers = itertools.count()
    outcomes: Counter[str] = Counter()
    first: dict[str, int] = {}
    refused = gevent.event.Event()

    def client() -> None:
        for index in numbers:
            if refused.is_set() or (not until_refused and index >= connections):
                return
            kind = kind_of(index, mix)
            outcome = _one(port, index, kind, timeout)
            key = f"{kind}:{outcome}"
            outcomes[key] += 1
            first.setdefault(key, index)
            if outcome == "refused":
                refused.set()

    gevent.joinall([gevent.spawn(client) for _ in range(concurrency)], raise_error=True)
    return {"outcomes": dict(outcomes), "first": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--mix", default="{}", help='JSON: fault kind -> connections per 100, e.g. {"raise": 10}')
    parser.add_argument("--timeout", type=float, default=20.0, help="per-connection bound; hitting it is a failure")
    parser.add_argument("--until-refused", action="store_true")
    args = parser.parse_args(argv)
    summary = run(args.port, args.connections, args.concurrency, json.loads(args.mix), args.timeout, args.until_refused)
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
