"""``gpool serve`` as a user runs it: real subprocesses, real sockets, real HTTP.

Servers listen on ``127.0.0.1:0`` and the tests read the port from the one line the
command prints once listening. The test process itself uses plain threads and
blocking sockets. Every wait is bounded, and synchronisation is on lines the server
writes (stdout, or the log on stderr), never on sleeps.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpool import WorkerPool
from gpool._cli.demo import app as demo_app

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gpool serve stops on POSIX signals")

STARTUP_TIMEOUT = 20.0
EXIT_TIMEOUT = 15.0
IO_TIMEOUT = 10.0

SERVING = re.compile(
    r"^gpool: serving http://(?P<host>[^:]+):(?P<port>\d+) "
    r"\(pool size (?P<size>\d+), overflow (?P<overflow>\w+)(?:, (?P<workers>\d+) workers)?; Ctrl-C to stop\)$"
)
ACCESS_LINE = re.compile(r'"GET / HTTP/1\.1" 200 ')

# The app module the tests serve from their own directory (the current directory of
# the server, which gpool serve puts on sys.path).
APP_MODULE = '''
"""An app module for gpool serve's tests."""

import time

from gevent import monkey


def application(environ, start_response):
    path = environ.get("PATH_INFO")
    if path == "/upload":
        # Tells the test the request is in flight; the body is still on its way.
        print("upload started", flush=True)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        reply = b"got %d bytes: %s" % (len(body), body)
    elif path == "/hang":
        print("hang started", flush=True)
        time.sleep(60)
        reply = b"woke up"
    elif path == "/patched":
        reply = str(monkey.is_module_patched("socket")).encode()
    else:
        reply = b"hello from the app module"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply]


not_callable = 42
'''


def gpool_script() -> Path:
    """The ``gpool`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("gpool")
    if not script.exists():
        pytest.skip(f"no gpool console script next to {sys.executable}; pip install -e . first")
    return script


def command(launcher: str, *args: str) -> list[str]:
    if launcher == "module":
        return [sys.executable, "-m", "gpool", "serve", *args]
    return [str(gpool_script()), "serve", *args]


def environment() -> dict[str, str]:
    # Development mode: ResourceWarnings and other hidden warnings reach stderr, where
    # the tests look for them. The console script has no -X flag to pass, hence the variable.
    return {**os.environ, "PYTHONDEVMODE": "1", "PYTHONUNBUFFERED": "1"}


# -- a running server -------------------------------------------------------------------


class Server:
    """A ``gpool serve`` process, its output read line by line on two threads."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.host = ""
        self.port = 0
        self.banner: dict[str, str] = {}
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            threading.Thread(target=_pump, args=(proc.stdout, self._stdout), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def stdout_line(self, timeout: float = IO_TIMEOUT) -> str:
        return self._next(self._stdout, timeout, "stdout")

    def wait_serving(self) -> None:
        line = self.stdout_line(STARTUP_TIMEOUT)
        match = SERVING.match(line)
        assert match, f"unexpected first line {line!r}; stderr:\n{self.stderr_text()}"
        self.banner = match.groupdict()
        self.host, self.port = match["host"], int(match["port"])
        assert self.port > 0

    def wait_stderr(self, pattern: str, timeout: float = IO_TIMEOUT) -> str:
        """The first further stderr line containing *pattern*."""
        while True:
            line = self._next(self._stderr, timeout, "stderr")
            self.stderr_lines.append(line)
            if pattern in line:
                return line

    def wait_exit(self) -> tuple[int, list[str]]:
        """The exit status and the rest of stdout; all of stderr is in stderr_lines after."""
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_TIMEOUT}s later; stderr:\n{self.stderr_text()}")
        for reader in self._readers:
            reader.join(timeout=IO_TIMEOUT)
        self._drain_stderr()
        rest: list[str] = []
        while (line := self._stdout.get(timeout=IO_TIMEOUT)) is not None:
            rest.append(line.rstrip("\n"))
        return code, rest

    def stderr_text(self) -> str:
        self._drain_stderr()
        return "\n".join(self.stderr_lines)

    def request(self, method: str, path: str, **headers: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on its own connection (so one task on the server)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=IO_TIMEOUT)
        try:
            conn.request(method, path, headers={"Connection": "close", **headers})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def _next(self, lines: queue.Queue[str | None], timeout: float, what: str) -> str:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nothing more on {what} within {timeout}s; stderr:\n{self.stderr_text()}")
        if line is None:
            self.proc.wait(timeout=EXIT_TIMEOUT)
            pytest.fail(f"{what} closed (exit status {self.proc.returncode}); stderr:\n{self.stderr_text()}")
        return line.rstrip("\n")

    def _drain_stderr(self) -> None:
        while True:
            try:
                line = self._stderr.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.stderr_lines.append(line.rstrip("\n"))


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def serving(launcher: str, *args: str, cwd: Path, new_session: bool = False) -> Iterator[Server]:
    """Start ``gpool serve ARGS`` and wait until it listens; kill it on the way out.

    With *new_session* it leads its own process group, as a command typed in a
    terminal does: a Ctrl-C there reaches every process of the group.
    """
    proc = subprocess.Popen(
        command(launcher, "--bind", "127.0.0.1:0", *args),
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=new_session,
    )
    try:
        server = Server(proc)
        server.wait_serving()
        yield server
    finally:
        if proc.poll() is None:
            if new_session:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(timeout=EXIT_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def fails(launcher: str, *args: str, cwd: Path) -> str:
    """Run ``gpool serve ARGS`` expecting exit status 2; return its one stderr line."""
    done = subprocess.run(
        command(launcher, *args),
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert done.returncode == 2, done
    assert done.stdout == "", done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "served_app.py").write_text(textwrap.dedent(APP_MODULE), encoding="utf-8")
    return tmp_path


# -- the demo app -----------------------------------------------------------------------


def test_demo_app_root_stats_and_metrics(tmp_path: Path) -> None:
    with serving("module", "--size", "50", "--overflow", "reject", cwd=tmp_path) as server:
        assert (server.banner["host"], server.banner["size"], server.banner["overflow"]) == (
            "127.0.0.1",
            "50",
            "reject",
        )
        connections = 0

        status, headers, body = server.request("GET", "/")
        connections += 1
        assert (status, headers.get_content_type()) == (200, "text/plain")
        assert body.startswith(b"Hello from gpool")

        status, headers, body = server.request("HEAD", "/")
        connections += 1
        assert (status, body) == (200, b"")
        assert int(headers["Content-Length"]) > 0

        status, _, _ = server.request("GET", "/no-such-page")
        connections += 1
        assert status == 404
        status, headers, _ = server.request("POST", "/stats")
        connections += 1
        assert (status, headers["Allow"]) == (405, "GET, HEAD")

        status, headers, body = server.request("GET", "/stats")
        connections += 1
        assert (status, headers.get_content_type()) == (200, "application/json")
        stats: dict[str, Any] = json.loads(body)
        assert stats["pid"] == server.proc.pid
        assert stats["size"] == 50
        # One connection, one task: every request so far counted, this one included.
        assert stats["tasks_started"] == connections
        assert stats["busy"] >= 1
        assert stats["tasks_failed"] == stats["tasks_killed"] == stats["rejected"] == 0
        # Connections one after another reuse workers rather than start one each.
        assert stats["workers_started"] < connections

        status, headers, body = server.request("GET", "/metrics")
        connections += 1
        assert (status, headers.get_content_type()) == (200, "text/plain")
        samples = {
            sample.name: sample
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for sample in family.samples
        }
        assert samples["gpool_size"].value == 50
        assert samples["gpool_tasks_started_total"].value == connections
        assert samples["gpool_tasks_failed_total"].value == 0
        assert samples["gpool_busy_tasks"].value >= 1
        assert samples["gpool_workers_started_total"].value == stats["workers_started"]
        assert {sample.labels["pool"] for sample in samples.values()} == {"default"}

        code, rest = _stop(server, signal.SIGINT)
        assert code == 0, server.stderr_text()
        assert rest == []
    # The access log goes to stderr through the gpool logger, at INFO (the default level).
    assert any(ACCESS_LINE.search(line) for line in server.stderr_lines), server.stderr_text()
    assert "Warning" not in server.stderr_text()


def _stop(server: Server, signum: int) -> tuple[int, list[str]]:
    server.proc.send_signal(signum)
    return server.wait_exit()


# -- an app module, and the graceful drain ------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "spec", "signum", "log_level"),
    [
        ("module", "served_app", signal.SIGINT, "info"),
        # The console script does not put the current directory on sys.path by itself.
        ("script", "served_app:application", signal.SIGTERM, "debug"),
    ],
)
def test_app_module_served_and_drained(app_dir: Path, launcher: str, spec: str, signum: int, log_level: str) -> None:
    with serving(launcher, spec, "--log-level", log_level, cwd=app_dir) as server:
        assert server.request("GET", "/")[2] == b"hello from the app module"

        # A request whose body is still arriving when the signal comes.
        upload = http.client.HTTPConnection(server.host, server.port, timeout=IO_TIMEOUT)
        try:
            upload.putrequest("POST", "/upload")
            upload.putheader("Content-Length", "10")
            upload.endheaders(b"first")
            assert server.stdout_line() == "upload started"
            server.proc.send_signal(signum)
            server.wait_stderr("stopping: draining")
            upload.send(b"-last")
            response = upload.getresponse()
            assert (response.status, response.read()) == (200, b"got 10 bytes: first-last")
            # Draining: the server asks the client not to reuse the connection.
            assert response.getheader("Connection") == "close"
        finally:
            upload.close()
        # The listener was closed before the in-flight request could finish.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT).close()

        code, rest = server.wait_exit()
        assert code == 0, server.stderr_text()
        assert rest == []
    assert any("0 task(s) killed" in line for line in server.stderr_lines), server.stderr_text()
    assert "Warning" not in server.stderr_text()


@pytest.mark.parametrize(
    ("missing", "advice"),
    [
        # gunicorn installed, but not what its gevent worker imports (gunicorn declares
        # packaging only in its "gevent" extra): name that module, not gpool's extra.
        ("packaging", "gunicorn's worker needs the module 'packaging', which is not installed ("),
        ("gunicorn", "needs gunicorn, which is not installed: pip install 'gpool[gunicorn]'"),
    ],
)
def test_several_workers_name_what_is_really_missing(missing: str, advice: str) -> None:
    # None in sys.modules makes an import fail as if the package were not installed.
    code = (
        f"import sys; sys.modules[{missing!r}] = None; from gpool.cli import main; "
        "sys.exit(main(['serve', '--workers', '2', '--bind', '127.0.0.1:0']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpool serve: error: --workers 2"), done.stderr
    assert advice in lines[0]
    if missing != "gunicorn":
        assert lines[0].endswith(f"pip install {missing}")
        assert "gpool[gunicorn]" not in lines[0]


def test_several_workers_serve_and_ctrl_c_drains(app_dir: Path) -> None:
    """--workers 2: gunicorn's engine with gpool's worker; Ctrl-C (SIGINT to the whole
    process group, as a terminal sends it) still lets a request in flight finish."""
    with serving("module", "served_app", "--workers", "2", cwd=app_dir, new_session=True) as server:
        assert server.banner["workers"] == "2"
        # gunicorn loses a signal that reaches a worker still booting: wait for both.
        for _ in range(2):
            server.wait_stderr("Worker serving")
        assert server.request("GET", "/")[2] == b"hello from the app module"
        upload = http.client.HTTPConnection(server.host, server.port, timeout=IO_TIMEOUT)
        try:
            upload.putrequest("POST", "/upload")
            upload.putheader("Content-Length", "10")
            upload.endheaders(b"first")
            assert server.stdout_line() == "upload started"
            os.killpg(server.proc.pid, signal.SIGINT)
            server.wait_stderr("Handling signal: int")
            upload.send(b"-last")
            response = upload.getresponse()
            assert (response.status, response.read()) == (200, b"got 10 bytes: first-last")
        finally:
            upload.close()
        code, _ = server.wait_exit()
        assert code == 0, server.stderr_text()


def test_deadlines_from_the_command_line(app_dir: Path) -> None:
    with serving("module", "served_app", "--soft-deadline", "0.3", "--hard-deadline", "1", cwd=app_dir) as server:
        status, _headers, _body = server.request("GET", "/hang")
        # pywsgi answers 500 for the request the watchdog killed, and serves on.
        assert status == 500
        server.wait_stderr("past soft_deadline=0.3s")
        server.wait_stderr("past hard_deadline=1s")
        assert server.request("GET", "/")[2] == b"hello from the app module"
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit()[0] == 0


def test_second_signal_cuts_the_drain_short(app_dir: Path) -> None:
    with serving("module", "served_app", cwd=app_dir) as server:
        hung = http.client.HTTPConnection(server.host, server.port, timeout=IO_TIMEOUT)
        try:
            hung.request("GET", "/hang")
            assert server.stdout_line() == "hang started"
            server.proc.send_signal(signal.SIGINT)
            server.wait_stderr("stopping: draining for up to 30.0 s")
            server.proc.send_signal(signal.SIGINT)
            server.wait_stderr("received SIGINT again: killing the requests still running")
            # Killed mid-request: pywsgi answers what it has not answered yet with a 500.
            response = hung.getresponse()
            assert (response.status, response.getheader("Connection")) == (500, "close")
            response.read()
        finally:
            hung.close()
        code, rest = server.wait_exit()
        assert code == 0, server.stderr_text()
        assert rest == []


def test_monkey_patching_and_log_level(app_dir: Path) -> None:
    with serving("script", "served_app", cwd=app_dir) as server:
        assert server.request("GET", "/patched")[2] == b"True"
        assert _stop(server, signal.SIGTERM)[0] == 0
    with serving("script", "served_app", "--no-monkey-patch", "--log-level", "warning", cwd=app_dir) as server:
        assert server.request("GET", "/patched")[2] == b"False"
        assert server.request("GET", "/")[0] == 200
        assert _stop(server, signal.SIGTERM)[0] == 0
    # Above INFO, neither the access log nor the drain's report is shown.
    assert server.stderr_lines == []


# -- refusals: one line on stderr, exit status 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("no_such_module_here:app", "no module named 'no_such_module_here'"),
        ("served_app:app:extra", "expected MODULE or MODULE:ATTRIBUTE"),
        ("served_app:missing", "module 'served_app' has no attribute 'missing'"),
        ("served_app:not_callable", "served_app:not_callable is not callable (it is of type int)"),
        ("no_app_inside", "module 'no_app_inside' has neither 'application' nor 'app'"),
        # An import error inside the user's module names what the module failed to import.
        ("broken_app:app", "importing 'broken_app' raised ModuleNotFoundError: No module named 'no_such_dependency'"),
        ("syntax_error_app", "importing 'syntax_error_app' raised SyntaxError"),
    ],
)
def test_bad_app(app_dir: Path, spec: str, reason: str) -> None:
    (app_dir / "no_app_inside.py").write_text("VALUE = 1\n", encoding="utf-8")
    (app_dir / "broken_app.py").write_text("import no_such_dependency\n", encoding="utf-8")
    (app_dir / "syntax_error_app.py").write_text("def app(:\n", encoding="utf-8")
    line = fails("script", spec, "--bind", "127.0.0.1:0", cwd=app_dir)
    assert line.startswith(f"gpool serve: error: cannot load app {spec!r}: {reason}"), line


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = fails("module", "--bind", f"127.0.0.1:{port}", cwd=tmp_path)
    assert line == f"gpool serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"


HINT = " (see gpool serve --help)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "0"], "--size must be an int >= 1, got 0"),
        (["--size", "many"], "argument --size: invalid int value: 'many'"),
        (["--overflow", "nope"], "--overflow must be 'backlog' or 'reject', got 'nope'"),
        (["--max-idle", "-1"], "--max-idle must be a positive, finite number of seconds, got -1.0"),
        (["--min-idle", "5", "--size", "2"], "--min-idle must not exceed --size (2), got 5"),
        (["--hard-deadline", "0"], "--hard-deadline must be a positive, finite number of seconds, got 0.0"),
        (
            ["--soft-deadline", "5", "--hard-deadline", "2"],
            r"--soft-deadline must be less than --hard-deadline (2.0), got 5.0",
        ),
        (["--bind", "nohostport"], "argument --bind: expected HOST:PORT, got 'nohostport'"),
        (["--bind", "127.0.0.1:70000"], "argument --bind: port must be 0 to 65535, got 70000"),
        (["--workers", "0"], "--workers must be an int >= 1, got 0"),
        (["--reclaim-idle-after", "0"], "--reclaim-idle-after must be a positive, finite number of seconds, got 0.0"),
        (["--reclaim-idle-after", "soon"], "argument --reclaim-idle-after: invalid float value: 'soon'"),
        (["--graceful-timeout", "-1"], "--graceful-timeout must be a finite number of seconds >= 0, got -1.0"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_bad_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    line = fails("module", *flags, cwd=tmp_path)
    assert line.startswith(f"gpool serve: error: {message}"), line
    assert line.endswith(HINT), line


def test_unknown_flag(tmp_path: Path) -> None:
    # argparse reports leftovers from the top-level parser, under its name.
    line = fails("script", "--no-such-flag", cwd=tmp_path)
    assert line == "gpool: error: unrecognized arguments: --no-such-flag (see gpool --help)"


# -- the demo app in process: what a deployment without the extras sees -------------------------


def _call(app: Any, path: str) -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, start_response))
    return seen[0], body


def test_demo_app_outside_a_pool_and_without_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    status, body = _call(demo_app, "/stats")
    assert status.startswith("500") and b"WorkerPool" in body

    # None in sys.modules makes the import fail, as if the package were not installed.
    for name in ("prometheus_client", "prometheus_client.exposition"):
        monkeypatch.setitem(sys.modules, name, None)
    with WorkerPool(2) as pool:
        metrics = pool.submit(_call, demo_app, "/metrics").get(timeout=IO_TIMEOUT)
        stats = pool.submit(_call, demo_app, "/stats").get(timeout=IO_TIMEOUT)
    assert metrics == ("501 Not Implemented", b"/metrics needs prometheus_client: pip install 'gpool[prometheus]'\n")
    assert stats[0] == "200 OK"
    assert json.loads(stats[1])["size"] == 2
