"""Run the programs in examples/ as real subprocesses and talk to them over the network.

The test process itself uses plain threads and blocking sockets (no gevent, no
monkey-patching). It synchronises on the ``listening on HOST:PORT`` line each server
prints once bound, never on sleeps, and every wait is bounded.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the examples stop on POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Bounds on every wait: the interpreter plus gevent start well within STARTUP; a
# server stops (its own stop timeout is 2 s) well within EXIT.
STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0
IO_TIMEOUT = 10.0

READY = re.compile(r"^listening on (?P<host>\S+):(?P<port>\d+)$")

# urllib honours *_proxy environment variables; these requests must go straight to
# the local server.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Example:
    """A running example: its process, its captured stdout lines, and its address."""

    def __init__(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None], stderr_path: Path) -> None:
        self.proc = proc
        self._lines = lines
        self._stderr_path = stderr_path
        self.host = ""
        self.port = 0

    def stderr_text(self) -> str:
        # Read through a file object of our own: the child shares the offset of the
        # one it writes to, which a seek here would move under it.
        return self._stderr_path.read_text(encoding="utf-8")

    def next_line(self, timeout: float) -> str:
        """The next stdout line, waiting at most *timeout* seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout}s; stderr:\n{self.stderr_text()}")
        if line is None:
            self.proc.wait(timeout=EXIT_TIMEOUT)
            pytest.fail(f"exited with {self.proc.returncode} before printing; stderr:\n{self.stderr_text()}")
        return line.rstrip("\n")

    def wait_ready(self) -> None:
        line = self.next_line(STARTUP_TIMEOUT)
        match = READY.match(line)
        assert match, f"unexpected first line {line!r}"
        self.host, self.port = match["host"], int(match["port"])
        assert self.port > 0

    def stop(self, signum: int) -> tuple[int, list[str]]:
        """Send *signum*; return the exit code and the remaining stdout lines."""
        self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> tuple[int, list[str]]:
        """Wait (bounded) for the process to exit; return its code and remaining stdout."""
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit within {EXIT_TIMEOUT}s; stderr:\n{self.stderr_text()}")
        rest: list[str] = []
        while (line := self._lines.get(timeout=IO_TIMEOUT)) is not None:
            rest.append(line.rstrip("\n"))
        return code, rest


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Reader thread: copy the child's stdout into *lines*, then None at EOF."""
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def run_example(name: str, *args: str, tmp_path: Path) -> Iterator[Example]:
    """Start ``python examples/NAME.py ARGS`` from the repository root.

    stdout is read line by line on a thread; stderr goes to a file (a pipe nobody
    reads could fill up and stall the server) and is shown when something fails. The
    process is always reaped, killed first if it is still running.
    """
    stderr_path = tmp_path / f"{name}.stderr"
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            # -X dev: ResourceWarnings and other normally hidden warnings reach stderr.
            [sys.executable, "-X", "dev", str(EXAMPLES / f"{name}.py"), *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            encoding="utf-8",
        )
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            example = Example(proc, lines, stderr_path)
            yield example
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=EXIT_TIMEOUT)
            reader.join(timeout=IO_TIMEOUT)
            proc.stdout.close()
    # Only reached when the test passed: the example must not have warned either.
    assert "Warning" not in example.stderr_text(), f"{name} warned; stderr in {stderr_path}"


# -- echo_server.py -------------------------------------------------------------------


def _echo_once(host: str, port: int, payload: bytes, connected: threading.Barrier, echoed: threading.Barrier) -> bytes:
    """One client: connect, echo *payload*, and hang up only once every client has its echo.

    The first barrier makes every client connect before any sends; the second keeps
    every connection (and so every server-side handler, blocked in recv) open until all
    clients have their reply, so the server provably serves them all at the same time.
    """
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as sock:
        connected.wait(timeout=IO_TIMEOUT)
        sock.sendall(payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        echoed.wait(timeout=IO_TIMEOUT)
        return bytes(received)


def test_echo_server_many_concurrent_clients(tmp_path: Path) -> None:
    clients = 200
    with run_example("echo_server", "--port", "0", tmp_path=tmp_path) as server:
        server.wait_ready()
        assert server.host == "127.0.0.1"

        # Each client has its own payload, large enough to take several recv() calls.
        payloads = [f"client {i:03d} ".encode() * 2000 for i in range(clients)]
        connected, echoed = threading.Barrier(clients), threading.Barrier(clients)
        with ThreadPoolExecutor(max_workers=clients) as executor:
            futures = [
                executor.submit(_echo_once, server.host, server.port, payload, connected, echoed)
                for payload in payloads
            ]
            replies = [future.result(timeout=IO_TIMEOUT * 3) for future in futures]
        assert replies == payloads

        code, rest = server.stop(signal.SIGINT)
        assert code == 0, server.stderr_text()
        # All 200 connections were open, each with its handler running, at one moment.
        assert rest == [
            f"stopped: {clients} connections served by {clients} worker greenlets (peak {clients} at once)"
        ], rest


def test_echo_server_stops_with_a_client_still_connected(tmp_path: Path) -> None:
    with run_example("echo_server", "--port", "0", "--stop-timeout", "0.5", tmp_path=tmp_path) as server:
        server.wait_ready()
        with socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            # The connection stays open; shutdown must not wait for it forever.
            code, _ = server.stop(signal.SIGTERM)
            assert code == 0, server.stderr_text()
            # The server closed our connection on its way out.
            assert sock.recv(16) == b""


# -- wsgi_app.py ------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str, bytes]:
    with _opener.open(url, timeout=IO_TIMEOUT) as reply:
        return reply.status, reply.headers.get_content_type(), reply.read()


def test_wsgi_app_root_and_stats(tmp_path: Path) -> None:
    with run_example("wsgi_app", "--port", "0", tmp_path=tmp_path) as server:
        server.wait_ready()
        base = f"http://{server.host}:{server.port}"

        status, ctype, body = _get(base + "/")
        assert (status, ctype) == (200, "text/plain")
        assert body.strip()

        status, ctype, body = _get(base + "/stats")
        assert (status, ctype) == (200, "application/json")
        before: dict[str, Any] = json.loads(body)
        assert {"workers", "idle", "busy", "tasks_completed"} <= before.keys()
        assert before["busy"] >= 1  # the /stats request itself

        for _ in range(5):
            assert _get(base + "/")[0] == 200
        after: dict[str, Any] = json.loads(_get(base + "/stats")[2])
        assert after["tasks_completed"] > before["tasks_completed"]
        assert after["tasks_started"] > before["tasks_started"]
        # Sequential connections reuse the same few workers instead of one per request.
        assert after["workers_started"] < after["tasks_started"]

        with pytest.raises(urllib.error.HTTPError) as info:
            _get(base + "/no-such-page")
        assert info.value.code == 404
        info.value.close()

        code, _ = server.stop(signal.SIGTERM)
        assert code == 0, server.stderr_text()
        # The access log went to stderr, one line per request.
        assert '"GET /stats HTTP/1.1" 200' in server.stderr_text()


# -- monkey_fanout.py -------------------------------------------------------------------

SUMMARY = re.compile(r"^elapsed=(?P<elapsed>[\d.]+) delay=(?P<delay>[\d.]+) clients=(?P<clients>\d+) ok=(?P<ok>\d+)$")


def test_monkey_fanout_serves_clients_concurrently(tmp_path: Path) -> None:
    clients, delay = 20, 0.5
    with run_example("monkey_fanout", "--clients", str(clients), "--delay", str(delay), tmp_path=tmp_path) as run:
        code, lines = run.wait()
        assert code == 0, f"stdout: {lines}\nstderr:\n{run.stderr_text()}"

    summaries = [m for m in map(SUMMARY.match, lines) if m]
    assert len(summaries) == 1, lines
    summary = summaries[0]
    assert int(summary["clients"]) == clients
    assert int(summary["ok"]) == clients
    assert float(summary["delay"]) == delay
    elapsed = float(summary["elapsed"])
    # Served one after another this would take clients * delay = 10 s. Concurrently it
    # takes about one delay; allow generous slack for a slow machine.
    assert delay <= elapsed < 5 * delay, lines


def test_monkey_fanout_serve_forever(tmp_path: Path) -> None:
    args = ("--serve-forever", "--port", "0", "--delay", "0.05")
    with run_example("monkey_fanout", *args, tmp_path=tmp_path) as server:
        assert server.next_line(STARTUP_TIMEOUT).startswith("upstream on ")
        server.wait_ready()
        status, _, body = _get(f"http://{server.host}:{server.port}/?n=7")
        assert (status, body) == (200, b"hello #7\n")
        code, _ = server.stop(signal.SIGINT)
        assert code == 0, server.stderr_text()


# -- flask_app.py -------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    status, ctype, body = _get(url)
    assert (status, ctype) == (200, "application/json")
    return json.loads(body)


def test_flask_app_routes_and_concurrency(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    with run_example("flask_app", "--port", "0", tmp_path=tmp_path) as server:
        server.wait_ready()
        base = f"http://{server.host}:{server.port}"

        status, ctype, body = _get(base + "/")
        assert (status, ctype) == (200, "text/plain")
        assert b"Flask" in body
        assert _get_json(base + "/hello/Ada") == {"greeting": "Hello, Ada!"}
        with pytest.raises(urllib.error.HTTPError) as info:
            _get(base + "/slow?seconds=99")
        assert info.value.code == 400
        info.value.close()

        # A slow request sleeps in plain time.sleep; /pool answers meanwhile and counts
        # it among the busy tasks, which it could not if the sleep blocked the process.
        with ThreadPoolExecutor(max_workers=1) as executor:
            slow = executor.submit(_get_json, base + "/slow?seconds=2")
            deadline = time.monotonic() + IO_TIMEOUT
            while True:  # polls until the slow request shows up, each poll a full round trip
                report = _get_json(base + "/pool")
                if report["stats"]["busy"] >= 2 or slow.done() or time.monotonic() > deadline:
                    break
            assert report["stats"]["busy"] >= 2, report
            assert report["stats"]["size"] == 1000
            assert slow.result(timeout=IO_TIMEOUT) == {"slept": 2.0}

        code, rest = server.stop(signal.SIGINT)
        assert code == 0, server.stderr_text()
        assert len(rest) == 1 and rest[0].startswith("stopped: "), rest
