"""A real nginx for the tests, and a keep-alive HTTP load generator that counts exactly.

``nginx_proxy`` starts Debian's nginx in the foreground (``daemon off``) with a config
generated in the test's temporary directory: its own pid file, logs and temp paths,
``listen`` on a free port of 127.0.0.1, one upstream (a gunicorn master's port) with
the README's upstream keep-alive settings. It waits (bounded) until nginx accepts
connections and stops it (SIGTERM, then SIGKILL of its own process group) on exit,
whatever happened meanwhile.

``Load`` runs client threads, each on its own ``http.client`` keep-alive connection,
and records every response's status and latency and every client-side error.
"""

from __future__ import annotations

import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

# Set to 1 where nginx must be there (CI): its absence then fails instead of skipping.
REQUIRE_NGINX = "GPOOL_REQUIRE_NGINX"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0

# The README's nginx settings ("Many machines: behind nginx or HAProxy"), for one
# backend on the loopback and the upstream keep-alive the tests ask for.
_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log info;

events {{
    worker_connections 1024;
}}

http {{
    log_format gpool_test '$status $request_method upstream_status=$upstream_status '
                          'request_time=$request_time';
    access_log {dir}/nginx-access.log gpool_test;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream app {{
        server 127.0.0.1:{upstream_port} max_fails=3 fail_timeout=10s;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream error timeout http_503;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """The nginx executable; skips the test if there is none (fails under GPOOL_REQUIRE_NGINX=1)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.environ.get(REQUIRE_NGINX) == "1":
        pytest.fail(f"nginx not found on PATH or at /usr/sbin/nginx, and {REQUIRE_NGINX}=1 requires it")
    pytest.skip(f"nginx is not installed (apt-get install nginx; {REQUIRE_NGINX}=1 makes this a failure)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """A running nginx: its port and its logs."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        self.proc = proc
        self.port = port
        self.directory = directory

    def error_log(self) -> str:
        path = self.directory / "nginx-error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr(self) -> str:
        return (self.directory / "nginx.stderr").read_text(errors="replace")

    def access_log(self) -> str:
        path = self.directory / "nginx-access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def retried(self) -> int:
        """Requests nginx sent more than once upstream (its access log lists each try's status)."""
        return sum(
            "," in line.partition("upstream_status=")[2].partition(" ")[0] for line in self.access_log().splitlines()
        )

    def error_lines(self, text: str = "[error]") -> list[str]:
        return [line for line in self.error_log().splitlines() if text in line]

    def stop(self) -> None:
        """Fast shutdown; nginx's own process group is killed if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # The master's pid is its process group's id (start_new_session): this reaches
        # its worker too, should the master have died without taking it along.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=_STOP_TIMEOUT)


def _user_directive() -> str:
    # As root, nginx would run its worker as "nobody", which cannot enter pytest's
    # private temporary directory: keep the worker as the current user.
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _start(binary: str, directory: Path, upstream_port: int) -> Nginx | None:
    """One attempt on a free port; None if the port was taken meanwhile."""
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(_CONFIG.format(dir=directory, port=port, upstream_port=upstream_port, user=_user_directive()))
    (directory / "nginx-error.log").write_text("")
    with (directory / "nginx.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(config), "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    nginx = Nginx(proc, port, directory)
    deadline = time.monotonic() + _START_TIMEOUT
    while not _accepts(port):
        if proc.poll() is not None:
            output = nginx.stderr() + nginx.error_log()
            if "Address already in use" in output:
                return None
            raise AssertionError(f"nginx exited with status {proc.returncode} at start:\n{output}")
        if time.monotonic() > deadline:
            nginx.stop()
            raise AssertionError(f"nginx not accepting on port {port} within {_START_TIMEOUT}s:\n{nginx.stderr()}")
        time.sleep(0.02)
    return nginx


@contextmanager
def nginx_proxy(tmp_path: Path, upstream_port: int) -> Iterator[Nginx]:
    """nginx on 127.0.0.1 in front of 127.0.0.1:*upstream_port*, stopped on exit."""
    binary = nginx_binary()
    directory = tmp_path / "nginx"
    directory.mkdir()
    nginx = None
    for _attempt in range(3):
        nginx = _start(binary, directory, upstream_port)
        if nginx is not None:
            break
    if nginx is None:
        raise AssertionError("nginx found no free port in 3 attempts")
    try:
        yield nginx
    finally:
        nginx.stop()


# -- load -----------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None
    # What a correct answer's body is; None: any.
    expect: bytes | None = None


@dataclass
class Results:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    wrong_bodies: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # Cut at the load's deadline, still unanswered.
    unfinished: int = 0
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors) + self.unfinished

    @property
    def failed(self) -> int:
        """Requests not answered 200 with the expected body."""
        return self.total - self.statuses[200] + len(self.wrong_bodies)

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    def summary(self) -> str:
        errors = Counter(self.errors)
        return (
            f"{self.total} requests in {self.elapsed:.2f}s: statuses {dict(self.statuses)}, "
            f"{len(self.errors)} client-side errors {dict(errors)}, {len(self.wrong_bodies)} wrong bodies "
            f"{self.wrong_bodies[:3]}, {self.unfinished} unfinished at the deadline"
            + (f", slowest {self.max_latency:.2f}s" if self.latencies else "")
        )


class Load:
    """*clients* threads, each sending *request* back to back on one keep-alive connection.

    Each thread stops after *per_client* requests (None: no limit) or once ``stop()``
    is called; ``join()`` waits for them, up to *deadline* seconds after the start, when
    the requests still unanswered are cut and counted as unfinished. A connection the
    server (or nginx) ends, or that failed, is replaced by a new one for the next
    request, as a client would; a failed request is not retried. Use as a context
    manager: the threads are stopped and joined on exit.
    """

    def __init__(
        self,
        port: int,
        request: Request,
        clients: int,
        per_client: int | None = None,
        timeout: float = 10.0,
        deadline: float | None = None,
    ) -> None:
        self.results = Results()
        self._port = port
        self._request = request
        self._per_client = per_client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deadline = deadline
        self._aborted = False
        self._open: set[http.client.HTTPConnection] = set()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._started = 0.0

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Let each thread end after its current request; wait for all of them."""
        self._stopping.set()
        self._join_until(time.monotonic() + self._timeout + 5.0)

    def join(self) -> None:
        """Wait for every thread to end: at most until the deadline, when the requests
        still in flight are cut and counted as unfinished."""
        if self._deadline is None:
            self._join_until(time.monotonic() + self._timeout * 2 + 5.0)
        else:
            self._join_until(self._started + self._deadline)

    def _join_until(self, end: float) -> None:
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            if not self.results.elapsed:
                self.results.elapsed = time.monotonic() - self._started
        if any(thread.is_alive() for thread in self._threads):
            self._abort()
            for thread in self._threads:
                thread.join(5.0)
        alive = sum(thread.is_alive() for thread in self._threads)
        if alive:
            raise AssertionError(f"{alive} client threads still running after they were cut")

    def _abort(self) -> None:
        """Cut every request in flight: shutting a socket down ends a blocked recv."""
        self._stopping.set()
        with self._lock:
            self._aborted = True
            for conn in self._open:
                if conn.sock is not None:
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def count(self) -> int:
        with self._lock:
            return self.results.total

    def wait_for(self, condition: Callable[[Results], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if condition(self.results):
                    return
                summary = self.results.summary()
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {timeout}s ({summary})")
            time.sleep(0.01)

    def _client(self) -> None:
        request = self._request
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout)
        with self._lock:
            self._open.add(conn)
        sent = 0
        try:
            while not self._stopping.is_set() and (self._per_client is None or sent < self._per_client):
                sent += 1
                started = time.monotonic()
                try:
                    conn.request(request.method, request.path, body=request.body)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # the next request opens a new connection
                    with self._lock:
                        if self._aborted:
                            self.results.unfinished += 1
                            break
                        self.results.errors.append(type(exc).__name__)
                        self.results.latencies.append(time.monotonic() - started)
                    continue
                if response.will_close:
                    conn.close()
                with self._lock:
                    self.results.statuses[response.status] += 1
                    self.results.latencies.append(time.monotonic() - started)
                    if response.status == 200 and request.expect is not None and body != request.expect:
                        self.results.wrong_bodies.append(body)
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()


# -- wrk ------------------------------------------------------------------------------

# wrk sends the same request on each connection, back to back; done() reports its
# client-side errors in one line the test parses.
_WRK_SCRIPT = """\
wrk.method = "{method}"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "application/octet-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT requests=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"""
_WRK_RESULT = re.compile(r"^WRK_RESULT (.*)$", re.MULTILINE)


def wrk_binary() -> str | None:
    return shutil.which("wrk")


class Wrk:
    """wrk through *nginx*, from ``__enter__`` until ``stop()`` (SIGINT, as Ctrl-C).

    wrk is fast enough to keep nginx's one worker busy, which widens the window in
    which nginx reuses an upstream connection the backend is closing; Python clients
    leave nginx mostly idle. Statuses come from nginx's access log (every request
    nginx answered), client-side errors from wrk's own count. Requests wrk abandons
    when it stops are logged by nginx as 499 and not counted.
    """

    def __init__(self, binary: str, nginx: Nginx, request: Request, connections: int, threads: int = 2) -> None:
        self.results = Results()
        self._nginx = nginx
        script = nginx.directory / "load.lua"
        body = (request.body or b"").decode("ascii")
        script.write_text(_WRK_SCRIPT.format(method=request.method, body=body))
        self._output = nginx.directory / "wrk.out"
        self._command = [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            "-d300s",  # stopped by stop(), long before
            "--timeout=10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{nginx.port}{request.path}",
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def __enter__(self) -> Wrk:
        self._started = time.monotonic()
        with self._output.open("wb") as output:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _statuses(self) -> Counter[int]:
        return Counter(int(line.split(" ", 1)[0]) for line in self._nginx.access_log().splitlines() if line)

    def wait_for(self, condition: Callable[[Results], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            now = Results(statuses=self._statuses())
            if condition(now):
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(f"wrk exited early: {self._output.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {timeout}s ({now.summary()})")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT)
            raise AssertionError("wrk did not stop on SIGINT") from None
        self.results.elapsed = time.monotonic() - self._started
        output = self._output.read_text(errors="replace")
        found = _WRK_RESULT.search(output)
        if found is None:
            raise AssertionError(f"wrk gave no result (status {proc.returncode}):\n{output}")
        counts = {name: int(value) for name, value in (item.split("=") for item in found.group(1).split())}
        statuses = self._statuses()
        statuses.pop(499, None)  # abandoned by wrk as it stopped
        self.results.statuses = statuses
        for name in ("connect", "read", "write", "timeout"):
            self.results.errors.extend([f"wrk {name} error"] * counts[name])
