"""What the churn and fault tests share: a server that accounts for every connection,
the handler that plays the faults, and the client process that drives them."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any

import gevent
import gevent.local
from gevent.event import Event
from gevent.server import StreamServer

from ..helpers import wait_until
from .clients import reply

CLIENTS = Path(__file__).with_name("clients.py")

# How long the handler waits for a request line. The clock starts when the server
# accepts, which it can do as soon as the kernel has finished the handshake, but a
# client sends its line only when its own process next runs: on a loaded machine that
# process can be descheduled for half a second or more. This bound was 0.5 s, and
# stopping the client process for 0.7 s mid-run had 101 of 20,000 well-behaved
# clients hung up on (``ok:cut``), failing the suite's exact counts; so it sits far
# above any scheduling delay, and no client is meant to reach it.
READ_TIMEOUT = 5.0
# A ``silent`` client sends its request line and then goes quiet: the handler waits
# for more for this long, until its read times out. That wait starts only after the
# client has demonstrably run, so it can be short.
QUIET_TIMEOUT = 0.5


class HandlerFault(Exception):
    """What the handler raises for a ``raise`` request; carries the client's id."""


class AccountingServer(StreamServer):  # type: ignore[misc]  # gevent ships no type information
    """A StreamServer that records each connection it accepts and each close.

    gevent hands every accepted socket to ``do_handle`` once, and the task it spawns
    ends by calling ``do_close`` on it; counting both shows whether every accepted
    connection is closed exactly once. Sockets stay referenced until closed, so an
    ``id()`` cannot be reused while it is a key here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open: dict[int, Any] = {}
        self.accepted = 0
        self.closes = 0
        self.closed_again = 0
        self.accepted_enough = Event()
        self.enough: int | None = None

    def do_handle(self, sock: Any, address: Any) -> None:
        self.accepted += 1
        self.open[id(sock)] = sock
        if self.enough is not None and self.accepted >= self.enough:
            self.accepted_enough.set()
        super().do_handle(sock, address)

    def do_close(self, sock: Any, *args: Any) -> None:
        if self.open.pop(id(sock), None) is None:
            self.closed_again += 1
        else:
            self.closes += 1
        super().do_close(sock, *args)


_client: ContextVar[int | None] = ContextVar("client", default=None)


class Handler:
    """Serves the protocol in ``clients.py``, checking on the way that no task sees
    another client's ContextVar or ``gevent.local`` value."""

    def __init__(self, work: float = 0.0) -> None:
        # Seconds an ``ok`` request takes (0: just a yield), to keep some in flight.
        self.work = work
        self.local = gevent.local.local()
        self.kinds: Counter[str] = Counter()
        self.leaks: list[str] = []

    def __call__(self, sock: Any, _address: Any) -> None:
        sock.settimeout(READ_TIMEOUT)
        line = self._read_line(sock)
        if not line.endswith(b"\n"):
            self.kinds["incomplete"] += 1  # reset or closed mid-request
            return
        kind_bytes, _, ident_text = line.strip().partition(b" ")
        kind, ident = kind_bytes.decode(), int(ident_text)
        self.kinds[kind] += 1
        seen_before = (_client.get(), getattr(self.local, "client", None))
        _client.set(ident)
        self.local.client = ident
        if kind == "raise":
            raise HandlerFault(ident)
        if kind == "hang":
            Event().wait()  # until the pool's hard deadline kills this task
        if kind == "silent":
            sock.settimeout(QUIET_TIMEOUT)
            sock.recv(1)  # nothing more comes: raises socket.timeout, a benign failure
        gevent.sleep(self.work)  # let other clients' tasks run before looking again
        seen_after = (_client.get(), getattr(self.local, "client", None))
        if seen_before != (None, None) or seen_after != (ident, ident):
            self.leaks.append(f"client {ident} saw {seen_before} on entry, {seen_after} later")
            sock.sendall(b"leak\n")
            return
        sock.sendall(reply(ident))

    @staticmethod
    def _read_line(sock: Any) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
        return data


class ErrorRecorder:
    """Stands in for the hub's ``handle_error`` while load runs: records what the pool
    reports, instead of printing thousands of tracebacks."""

    def __init__(self) -> None:
        self.reports: list[tuple[object, BaseException]] = []

    def __call__(
        self, context: object, kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        self.reports.append((context, value))

    @contextmanager
    def installed(self) -> Iterator[ErrorRecorder]:
        hub = gevent.get_hub()
        hub.handle_error = self
        try:
            yield self
        finally:
            del hub.handle_error


def run_clients(port: int, *, timeout: float, **options: Any) -> dict[str, Any]:
    """Run ``clients.py`` against *port* in a new process and return its summary.

    The hub keeps serving while we wait for the process: its end is polled, with
    *timeout* as the bound. Options become flags (``until_refused=True`` gives
    ``--until-refused``; ``mix`` is passed as JSON).
    """
    argv = [sys.executable, str(CLIENTS), "--port", str(port)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        try:
            wait_until(lambda: proc.poll() is not None, timeout=timeout, what="the client process finished")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise AssertionError(f"clients.py exited {proc.returncode}: {err.read().decode(errors='replace')[-3000:]}")
        summary: dict[str, Any] = json.loads(out.read())
    return summary
