"""Differential tests: the same raw bytes to an anchor and to its gpool counterpart.

Three pairs, each anchor the server gpool's integration stands in for:

- ``gunicorn -k gevent`` and ``-k gpool.workers.GPoolWorker``;
- ``gunicorn -k gevent_pywsgi`` and ``-k gpool.workers.GPoolPyWSGIWorker``
  (both pairs under a real gunicorn master, ``-w 1``, ``--bind fd://N``);
- ``gevent.pywsgi.WSGIServer(spawn=gevent.pool.Pool(n))`` and
  ``gpool.wsgi.WSGIServer(spawn=gpool.WorkerPool(n))``, in this process.

The app is ``tests/apps/keepalive_probe.py``, whose answers depend on the request
only. Each case sends its bytes, reads as many responses as it sent requests (or
until the server closes), then, if the connection is still open, sends one probe
request (``Connection: close``) to learn whether the server kept the connection
usable (it is answered, or not), and reads until the end of the stream (bounded by a
socket timeout). The
transcript -- every response's status line, headers and body bytes as sent, then how
the stream ended -- must be the same for both servers.

Normalisations, each because the value legitimately differs between two servers
answering the same bytes:

- ``Date``: the clock;
- ``Server``: the software's name and version;
- an end of stream by FIN and one by RST are both "closed": which one the kernel sends
  depends on whether unread client bytes were still in the server's buffer at the
  close, a matter of timing, and an RST may also hide from the reader what the kernel
  had received just before it.

This module also holds the client and the gunicorn launcher that
tests/serving/test_keepalive_loop.py uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pytest
from gevent import socket
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer as GeventWSGIServer

from gpool import WorkerPool
from gpool.wsgi import WSGIServer

from ..apps.keepalive_probe import app
from ..helpers import running, wait_until
from .test_gunicorn import Master, gunicorn_command, launched, listening_socket

GPOOL_WORKER = "gpool.workers.GPoolWorker"
GPOOL_PYWSGI_WORKER = "gpool.workers.GPoolPyWSGIWorker"
# Bounds for a loaded machine; passing exchanges take milliseconds.
IO_TIMEOUT = 5.0
BOOT_TIMEOUT = 20.0
# Well beyond any bound a test relies on.
LONG = "30"


# -- a raw HTTP/1.x client ----------------------------------------------------------------


@dataclass
class Response:
    status: bytes  # the status line, without CRLF
    headers: list[tuple[bytes, bytes]]  # as sent, in order
    body: bytes  # as sent: chunked framing (and trailers) included

    @property
    def code(self) -> int:
        return int(self.status.split()[1])

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def closes(self) -> bool:
        """It carries ``Connection: close``."""
        value = self.header("Connection")
        return value is not None and value.strip().lower() == b"close"

    @property
    def content(self) -> bytes:
        """The body without chunked framing."""
        if (self.header("Transfer-Encoding") or b"").lower() != b"chunked":
            return self.body
        out: list[bytes] = []
        rest = self.body
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return b"".join(out)
            out.append(rest[:size])
            rest = rest[size + 2 :]


class Closed(Exception):
    """The server ended the stream (FIN or RST) before a whole response arrived."""


class Client:
    """One connection, read response by response. gevent sockets: the server may run
    in this very process."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
        except BaseException:
            self.sock.close()
            raise
        self.buffer = b""
        self.ended: str | None = None  # "closed" once the stream ended

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Receive more; False at the end of the stream."""
        if self.ended:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.ended = "closed"
            return False
        self.buffer += chunk
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise Closed(f"closed mid-response; got {self.buffer!r}")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise Closed(f"closed mid-response; got {self.buffer!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def wait_for(self, data: bytes) -> None:
        """Receive until *data* has arrived (it stays in the buffer)."""
        while data not in self.buffer:
            if not self._fill():
                raise Closed(f"closed before {data!r}; got {self.buffer!r}")

    def read_response(self) -> Response | None:
        """The next response; None if the stream ends before any byte of it."""
        if not self.buffer and not self._fill():
            return None
        status = self._line()
        headers = []
        for line in iter(self._line, b""):
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        response = Response(status, headers, b"")
        code = response.code
        if 100 <= code < 200 or code in (204, 304):
            return response
        if (response.header("Transfer-Encoding") or b"").lower() == b"chunked":
            parts = []
            while True:
                size_line = self._line()
                parts.append(size_line + b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    for trailer in iter(self._line, b""):
                        parts.append(trailer + b"\r\n")
                    parts.append(b"\r\n")
                    break
                parts.append(self._take(size + 2))
            response.body = b"".join(parts)
        elif response.header("Content-Length") is not None:
            response.body = self._take(int(response.header("Content-Length") or b"0"))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def read_final_response(self) -> Response | None:
        """The next response that is not 1xx."""
        while True:
            response = self.read_response()
            if response is None or response.code >= 200:
                return response

    def at_end(self) -> bool:
        """True if the server has ended the stream; reads (and drops nothing: the bytes
        stay buffered) until it does or the socket timeout passes."""
        try:
            while self._fill():
                pass
        except socket.timeout:
            return False
        return True


def get(path: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {path} {version}", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- gunicorn ----------------------------------------------------------------------------


def wait_for_log(master: Master, text: str, count: int = 1) -> None:
    wait_until(lambda: master.log().count(text) >= count, BOOT_TIMEOUT, f"{text!r} x{count} in the log", master.log)


@contextmanager
def gunicorn(
    tmp_path: Path, worker_class: str, *options: str, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[Master]:
    """A gunicorn master serving keepalive_probe:app with *workers* of *worker_class*.

    Returns once every worker can take signals (gpool's workers log "Worker serving";
    for gunicorn's, "Booting worker" is the last word, and a client that connects
    earlier waits in the listen queue).
    """
    listener = listening_socket()
    command = gunicorn_command(
        listener, worker_class, "keepalive_probe:app", f"--workers={workers}", f"--graceful-timeout={LONG}", *options
    )
    with launched(command, listener, tmp_path, env or {}) as master:
        if worker_class.startswith("gpool."):
            wait_for_log(master, "Worker serving", workers)
        else:
            wait_for_log(master, "Booting worker", workers)
        yield master


# -- cases -------------------------------------------------------------------------------


class Expect100:
    """A step: read until a 100 Continue (then go on) or a final response (then send
    nothing more of this case)."""


Step = Union[bytes, Expect100]
EXPECT_100 = Expect100()
PROBE = get("/probe", "Connection: close")


@dataclass
class Case:
    steps: list[Step]
    # Requests in the bytes: at most this many final responses are read before the
    # probe (fewer if the server closes first).
    requests: int


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def headers_request(*lines: bytes) -> bytes:
    """A GET of /headers with these header lines, then a pipelined GET."""
    return (
        b"GET /headers HTTP/1.1\r\nHost: test\r\n"
        + b"".join(line + b"\r\n" for line in lines)
        + b"\r\n"
        + get("/after")
    )


CHUNKED_WITH_TRAILERS = (
    b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Check\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Check: yes\r\n\r\n"
)

CASES: dict[str, Case] = {
    "two pipelined GETs": Case([get("/one") + get("/two")], 2),
    "three pipelined GETs": Case([get("/one") + get("/two") + get("/three")], 3),
    "POST with Expect: 100-continue": Case(
        [
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
            EXPECT_100,
            b"hello world",
        ],
        1,
    ),
    "chunked request with trailers": Case([CHUNKED_WITH_TRAILERS], 1),
    "unread body then a pipelined GET": Case([post("/ignore", b"x" * 1000) + get("/after")], 2),
    "unread chunked body then a pipelined GET": Case(
        [
            b"POST /ignore HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + get("/after")
        ],
        2,
    ),
    "HTTP/1.0 with Connection: keep-alive": Case([get("/ka", "Connection: keep-alive", version="HTTP/1.0")], 1),
    "HTTP/1.0 plain": Case([get("/plain", version="HTTP/1.0")], 1),
    "both Content-Length and Transfer-Encoding": Case(
        [
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n" + get("/after")
        ],
        2,
    ),
    "invalid chunk size": Case(
        [
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            + get("/after")
        ],
        2,
    ),
    "header line without a colon": Case([b"GET / HTTP/1.1\r\nHost: test\r\nNoColonHere\r\n\r\n" + get("/after")], 2),
    # How each server reads header blocks (the app answers what it saw).
    "plain headers": Case([headers_request(b"Accept: */*", b"User-Agent: wrk")], 2),
    "blanks around header values": Case([headers_request(b"X-Pad: \t padded \t", b"X-Empty:", b"X-Tight:tight")], 2),
    "repeated header": Case([headers_request(b"X-Dup: one", b"x-dup: two")], 2),
    "underscore in a header name": Case([headers_request(b"X_Under: yes", b"X-Dash: yes")], 2),
    "header value outside ASCII": Case([headers_request(b"X-Latin: caf\xe9", b"X-Utf8: \xe2\x82\xac")], 2),
    "folded header line": Case([headers_request(b"X-Folded: first", b"  second")], 2),
    "multipart content type": Case([headers_request(b"Content-Type: multipart/form-data; boundary=x")], 2),
    "bare LF line endings": Case([b"GET /headers HTTP/1.1\nHost: test\nX-Lf: yes\n\n" + get("/after")], 2),
}

NORMALISED = {b"date": b"<date>", b"server": b"<server>"}


def normalise(response: Response) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    headers = [(name, NORMALISED.get(name.lower(), value)) for name, value in response.headers]
    return response.status, headers, response.body


def transcript(port: int, case: Case) -> list[Any]:
    """What the server answers to *case*, normalised."""
    out: list[Any] = []
    with Client(port) as client:
        finals = 0
        stop_sending = False
        try:
            for step in case.steps:
                if stop_sending:
                    break
                if isinstance(step, Expect100):
                    response = client.read_response()
                    if response is None:
                        break
                    out.append(normalise(response))
                    if response.code >= 200:
                        finals += 1
                        stop_sending = True
                    continue
                client.send(step)
            while finals < case.requests:
                response = client.read_response()
                if response is None:
                    break
                out.append(normalise(response))
                if response.code >= 200:
                    finals += 1
            if client.ended is None and not client.buffer:
                try:
                    client.send(PROBE)
                except OSError:
                    pass  # closed meanwhile: the end of the stream shows it
            while True:
                response = client.read_response()
                if response is None:
                    break
                out.append(normalise(response))
        except socket.timeout:
            out.append(("timed out", client.buffer))
        except Closed as exc:
            out.append(("cut", str(exc)))
        out.append(("end", client.ended))
    return out


# -- the servers -------------------------------------------------------------------------

PAIRS: dict[str, tuple[str, str] | tuple[None, None]] = {
    "gevent-vs-GPoolWorker": ("gevent", GPOOL_WORKER),
    "gevent_pywsgi-vs-GPoolPyWSGIWorker": ("gevent_pywsgi", GPOOL_PYWSGI_WORKER),
    "pywsgi.WSGIServer-vs-gpool.wsgi.WSGIServer": (None, None),
}


@pytest.fixture(scope="module", params=list(PAIRS))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(anchor's port, gpool's port)."""
    anchor_class, gpool_class = PAIRS[request.param]
    with ExitStack() as stack:
        if anchor_class is None or gpool_class is None:
            anchor = stack.enter_context(running(GeventWSGIServer(("127.0.0.1", 0), app, spawn=Pool(4), log=None)))
            ours = stack.enter_context(running(WSGIServer(("127.0.0.1", 0), app, spawn=WorkerPool(4), log=None)))
            yield anchor.server_port, ours.server_port
        else:
            ports = []
            for worker_class in (anchor_class, gpool_class):
                tmp = tmp_path_factory.mktemp(worker_class.rsplit(".", 1)[-1])
                master = stack.enter_context(gunicorn(tmp, worker_class, f"--keep-alive={LONG}"))
                ports.append(master.port)
            yield ports[0], ports[1]


@pytest.mark.parametrize("name", list(CASES))
def test_same_bytes_same_answer(pair: tuple[int, int], name: str) -> None:
    case = CASES[name]
    anchor_port, gpool_port = pair
    expected = transcript(anchor_port, case)
    got = transcript(gpool_port, case)
    assert got == expected


def test_the_client_tells_kept_alive_from_closed(pair: tuple[int, int]) -> None:
    """The transcript's end does distinguish the two (else the cases prove little)."""
    anchor_port, _ = pair
    kept = transcript(anchor_port, CASES["two pipelined GETs"])
    closed = transcript(anchor_port, CASES["HTTP/1.0 plain"])
    assert kept[-2][0] == b"HTTP/1.1 200 OK" and kept[-2][2] == b"path /probe\n"
    assert closed[-2][2] == b"path /plain\n"
    assert kept[-1] == closed[-1] == ("end", "closed")


if os.environ.get("GPOOL_DIFFERENTIAL_SHOW"):  # a debugging aid: print every transcript

    def test_show(pair: tuple[int, int]) -> None:
        for name, case in CASES.items():
            print(name)
            for side, port in zip(("anchor", "gpool"), pair):
                print(" ", side, transcript(port, case))
