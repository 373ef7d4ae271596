"""gpool.workers under a real gunicorn master, and gpool._cli.gunicorn_app.run_gunicorn.

Each test starts ``python -m gunicorn`` in a subprocess on a socket this process
bound to a free port and hands over with ``--bind fd://N``: no port race, and a
client may connect before the worker has booted (it waits in the listen queue).
The app is ``tests/apps/pool_probe.py``. Waits are bounded: socket timeouts, process
waits, and polling of the master's log for a line.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
from gunicorn.config import KNOWN_SETTINGS

from gpool._cli.gunicorn_app import run_gunicorn
from gpool._cli.serve import load_app

from ..apps.pool_probe import HOLD_BODY_LINES, HOLD_LINE

APPS = Path(__file__).parents[1] / "apps"
GPOOL_WORKER = "gpool.workers.GPoolWorker"
GPOOL_PYWSGI_WORKER = "gpool.workers.GPoolPyWSGIWorker"
WORKER_CLASSES = [GPOOL_WORKER, GPOOL_PYWSGI_WORKER]
HELD_REST = HOLD_LINE * HOLD_BODY_LINES + b"end\n"
# gunicorn's exit status when a worker fails to boot.
WORKER_BOOT_ERROR = 3
# Generous bounds for a loaded CI machine; the tests take far less when they pass.
TIMEOUT = 20.0
# Well beyond any bound a test relies on, so that a graceful stop or a keep-alive
# timeout cannot be mistaken for what the test checks.
LONG = "30"
# gunicorn >= 24 opens a control socket at a fixed path; parallel masters would share it.
CONTROL_SOCKET_OFF = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


class Master:
    """A gunicorn master in a subprocess, its port and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, tmp_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self._tmp_path = tmp_path
        self._held = 0
        self._connections: list[http.client.HTTPConnection] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1) -> None:
        """Poll the log until *text* appears *count* times."""
        wait_until(lambda: self.log().count(text) >= count, f"{text!r} x{count} in the log", self.log)

    def connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        self._connections.append(conn)
        return conn

    def close_connections(self) -> None:
        for conn in self._connections:
            conn.close()

    def get(self, path: str, connection: http.client.HTTPConnection | None = None) -> tuple[int, Any, bytes]:
        """GET *path* on *connection* (kept open) or on a new connection closed after."""
        conn = connection or self.connect()
        try:
            headers = {} if connection else {"Connection": "close"}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            if connection is None:
                conn.close()

    def hold(self) -> Held:
        """Start a request that stays in flight until released; return once it runs."""
        self._held += 1
        release = self._tmp_path / f"release-{self._held}"
        conn = self.connect()
        conn.request("GET", f"/hold?release={release}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(6) == b"start\n"  # the app is running it
        return Held(conn, response, release)

    def exit_status(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master still running after {timeout}s; log:\n{self.log()}") from None


class Held:
    """A request in flight, waiting for its release file."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, release: Path) -> None:
        self.conn = conn
        self.response = response
        self.release_path = release

    def release(self) -> None:
        self.release_path.touch()

    def rest(self) -> bytes:
        return self.response.read()


def wait_until(condition: Callable[[], bool], what: str, details: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {TIMEOUT}s\n{details()}")
        time.sleep(0.02)


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GPOOL_")}
    env.pop("GUNICORN_CMD_ARGS", None)
    env.update(extra)
    return env


def listening_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


@contextmanager
def launched(command: list[str], listener: socket.socket, tmp_path: Path, env: dict[str, str]) -> Iterator[Master]:
    """Run *command* (a gunicorn master) with *listener* inherited; kill it on exit."""
    log_path = tmp_path / "gunicorn.log"
    port = listener.getsockname()[1]
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, pass_fds=[listener.fileno()], env=child_environment(env)
            )
    finally:
        listener.close()  # the master holds it now
    master = Master(proc, port, log_path, tmp_path)
    try:
        yield master
    finally:
        master.close_connections()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def gunicorn_command(
    listener: socket.socket, worker_class: str, app: str, *options: str, path: Path = APPS
) -> list[str]:
    """``python -m gunicorn`` serving *app* (from *path*) on *listener* with *worker_class*;
    later *options* win over earlier ones, as on gunicorn's command line."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=fd://{listener.fileno()}",
        f"--worker-class={worker_class}",
        f"--pythonpath={path}",
        *CONTROL_SOCKET_OFF,
        *options,
        app,
    ]


@contextmanager
def gunicorn(tmp_path: Path, worker_class: str, *options: str, env: dict[str, str] | None = None) -> Iterator[Master]:
    """One gunicorn master with one worker of *worker_class* serving pool_probe:app."""
    listener = listening_socket()
    command = gunicorn_command(
        listener, worker_class, "pool_probe:app", "--workers=1", f"--graceful-timeout={LONG}", *options
    )
    with launched(command, listener, tmp_path, env or {}) as master:
        yield master


def assert_cut(response: http.client.HTTPResponse) -> None:
    """The rest of *response* does not arrive in full."""
    try:
        rest = response.read()
    except (http.client.HTTPException, OSError):
        return
    assert rest != HELD_REST, "the request ran to its end"


# -- import ---------------------------------------------------------------------------


def test_import_creates_no_gevent_object() -> None:
    # gunicorn imports the worker class in the master, before forking.
    code = textwrap.dedent(
        """
        import gpool.workers, gpool._cli.gunicorn_app
        from gevent import monkey
        from gevent._hub_local import get_hub_if_exists
        assert get_hub_if_exists() is None, "a hub exists"
        assert not monkey.is_anything_patched(), "something is patched"
        print("clean")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout.strip()) == (0, "clean"), done.stderr


# -- serving and settings -------------------------------------------------------------

SETTINGS = {"GPOOL_MAX_IDLE": "2.5", "GPOOL_MIN_IDLE": "1", "GPOOL_OVERFLOW": "backlog", "GPOOL_MAX_DETACHED": "2"}
EXPECTED_OPTIONS = {"size": 7, "max_idle": 2.5, "min_idle": 1, "overflow": "backlog", "max_detached": 2}


# Settings are read the same way by both classes: each class tries one way.
@pytest.mark.parametrize(("worker_class", "how"), [(GPOOL_WORKER, "environment"), (GPOOL_PYWSGI_WORKER, "--env")])
def test_requests_are_served_on_reused_greenlets(tmp_path: Path, worker_class: str, how: str) -> None:
    if how == "--env":
        options, env = [f"--env={name}={value}" for name, value in SETTINGS.items()], {}
    else:
        options, env = [], SETTINGS
    with gunicorn(tmp_path, worker_class, "--worker-connections=7", *options, env=env) as master:
        status, _headers, body = master.get("/")
        assert (status, body) == (200, b"hello\n")
        assert json.loads(master.get("/pool")[2]) == EXPECTED_OPTIONS
        # Each on a new connection, after the previous one has ended.
        served_by = {master.get("/whoami")[2] for _ in range(5)}
        assert len(served_by) == 1, served_by


def test_gevent_worker_makes_a_greenlet_per_connection(tmp_path: Path) -> None:
    # The baseline the test above is measured against: the probe does tell greenlets apart.
    with gunicorn(tmp_path, "gevent") as master:
        served_by = {master.get("/whoami")[2] for _ in range(3)}
        assert len(served_by) == 3, served_by


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path, worker_class: str) -> None:
    with gunicorn(tmp_path, worker_class) as master:
        held = master.hold()
        master.proc.send_signal(signal.SIGTERM)
        master.wait_for_log("Worker draining")
        held.release()
        assert held.rest() == HELD_REST
        assert master.exit_status() == 0


# Both signals reach the same handler (gunicorn's): each class gets one.
@pytest.mark.parametrize(
    ("worker_class", "signum"), [(GPOOL_WORKER, signal.SIGQUIT), (GPOOL_PYWSGI_WORKER, signal.SIGINT)]
)
def test_sigquit_and_sigint_stop_at_once(tmp_path: Path, worker_class: str, signum: int) -> None:
    with gunicorn(tmp_path, worker_class) as master:
        held = master.hold()  # never released: a graceful stop would wait LONG seconds
        master.proc.send_signal(signum)
        assert master.exit_status(timeout=10.0) == 0
        assert_cut(held.response)
        assert "Worker draining" not in master.log()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_graceful_timeout_then_requests_are_killed(tmp_path: Path, worker_class: str) -> None:
    # SIGTERM to the worker alone (as on HUP or max_requests): the master lives on
    # and would not cut the drain short.
    with gunicorn(tmp_path, worker_class, "--graceful-timeout=1") as master:
        worker_pid = json.loads(master.get("/whoami")[2])["pid"]
        held = master.hold()  # never released
        os.kill(worker_pid, signal.SIGTERM)
        assert_cut(held.response)
        # gpool's own log lines reach gunicorn's error log.
        master.wait_for_log("graceful timeout (1.0 s): killing 1 unfinished task(s)")
        master.wait_for_log("Worker serving", count=2)  # the master replaced the worker
        assert master.get("/")[0] == 200


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_hard_deadline_cuts_a_stuck_request_and_the_worker_serves_on(tmp_path: Path, worker_class: str) -> None:
    env = {"GPOOL_SOFT_DEADLINE": "0.5", "GPOOL_HARD_DEADLINE": "1"}
    with gunicorn(tmp_path, worker_class, env=env) as master:
        worker_pid = json.loads(master.get("/whoami")[2])["pid"]
        held = master.hold()  # never released: stuck until the watchdog steps in
        assert_cut(held.response)
        master.wait_for_log("past soft_deadline=0.5s")
        master.wait_for_log("past hard_deadline=1s")
        # The same process serves on: only the stuck request was ended.
        assert json.loads(master.get("/whoami")[2])["pid"] == worker_pid
        assert master.get("/")[0] == 200


# -- keep-alive -----------------------------------------------------------------------


def read_response(rfile: Any) -> tuple[bytes, bytes]:
    """(status line, body) of a response with a Content-Length, from a socket file."""
    status = rfile.readline()
    length = 0
    for line in iter(rfile.readline, b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status.strip(), rfile.read(length)


def test_gpool_worker_keeps_gunicorn_keep_alive_rules(tmp_path: Path) -> None:
    with gunicorn(tmp_path, GPOOL_WORKER, "--keep-alive=1") as master:
        sock = socket.create_connection(("127.0.0.1", master.port), timeout=TIMEOUT)
        with sock, sock.makefile("rb") as rfile:
            # Pipelined: the second request is buffered when the first is answered.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(rfile) == (b"HTTP/1.1 200 OK", b"hello\n")
            assert read_response(rfile)[0] == b"HTTP/1.1 200 OK"
            # A body the app does not read is skipped, then the next request served.
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde")
            assert read_response(rfile) == (b"HTTP/1.1 200 OK", b"hello\n")
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(rfile) == (b"HTTP/1.1 200 OK", b"hello\n")
            # Idle: closed by the server when the keep-alive timeout (1 s) runs out.
            assert rfile.read() == b""


# -- keep-alive reclamation and overload ----------------------------------------------


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_idle_keep_alive_connections_give_way_to_new_clients(tmp_path: Path, worker_class: str) -> None:
    with gunicorn(tmp_path, worker_class, "--worker-connections=3", f"--keep-alive={LONG}") as master:
        idle = [master.connect() for _ in range(3)]
        for conn in idle:
            assert master.get("/", conn)[0] == 200
        started = time.monotonic()
        assert master.get("/")[0] == 200  # a fourth client, on a new connection
        # Served at once, not when a keep-alive timeout ends (LONG seconds).
        assert time.monotonic() - started < 5.0
        with pytest.raises((http.client.HTTPException, OSError)):
            master.get("/", idle[0])  # the connection idle longest was closed
        assert master.get("/", idle[1])[0] == 200
        # Two slots idle, one in flight: a new client again takes an idle one's slot.
        held = master.hold()
        assert master.get("/")[0] == 200
        held.release()
        assert held.rest() == HELD_REST


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_requests_in_flight_are_never_cut_for_a_new_client(tmp_path: Path, worker_class: str) -> None:
    with gunicorn(tmp_path, worker_class, "--worker-connections=3", f"--keep-alive={LONG}") as master:
        held = [master.hold() for _ in range(3)]
        outcome: list[Any] = []
        waiting = threading.Thread(target=lambda: outcome.append(master.get("/")[0]), daemon=True)
        waiting.start()
        # A bounded look for something that must not happen: the client is served
        # while every slot holds a request.
        waiting.join(timeout=1.0)
        assert outcome == []
        for request in held:
            request.release()
        assert [request.rest() for request in held] == [HELD_REST] * 3
        waiting.join(timeout=TIMEOUT)
        assert outcome == [200]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_overflow_reject_answers_503_when_full(tmp_path: Path, worker_class: str) -> None:
    env = {"GPOOL_OVERFLOW": "reject"}
    with gunicorn(tmp_path, worker_class, "--worker-connections=1", env=env) as master:
        held = master.hold()
        status, headers, _body = master.get("/")
        assert status == 503
        assert headers["Retry-After"] == "1"
        held.release()
        assert held.rest() == HELD_REST
        assert master.get("/")[0] == 200


# -- bad settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_class", "how", "name", "value", "message"),
    [
        (
            GPOOL_WORKER,
            "environment",
            "GPOOL_MAX_IDLE",
            "soon",
            "GPOOL_MAX_IDLE='soon': max_idle must be a positive, finite number of seconds",
        ),
        (
            GPOOL_PYWSGI_WORKER,
            "--env",
            "GPOOL_OVERFLOW",
            "drop",
            "GPOOL_OVERFLOW='drop': overflow must be 'backlog' or 'reject', got 'drop'",
        ),
        (
            GPOOL_PYWSGI_WORKER,
            "environment",
            "GPOOL_MIN_IDLE",
            "5",
            "GPOOL_MIN_IDLE='5': min_idle must not exceed size (3), got 5",
        ),
        (
            GPOOL_WORKER,
            "environment",
            "GPOOL_RECLAIM_IDLE_AFTER",
            "-1",
            "GPOOL_RECLAIM_IDLE_AFTER='-1': reclaim_idle_after must be a positive, finite number of seconds, got -1.0",
        ),
        (
            GPOOL_PYWSGI_WORKER,
            "--env",
            "GPOOL_RECLAIM_IDLE_AFTER",
            "soon",
            "GPOOL_RECLAIM_IDLE_AFTER='soon': reclaim_idle_after must be a positive, finite number of seconds",
        ),
        (
            GPOOL_WORKER,
            "environment",
            "GPOOL_ISOLATE",
            "maybe",
            "GPOOL_ISOLATE='maybe': isolate must be 1 or 0 (also true/false, yes/no, on/off)",
        ),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_a_bad_setting_stops_the_worker_from_booting(
    tmp_path: Path, worker_class: str, how: str, name: str, value: str, message: str, workers: str
) -> None:
    # Checked in the master, before any worker: one line and status 3 whatever -w says.
    options = ["--worker-connections=3", f"--workers={workers}"]
    env = {}
    if how == "--env":
        options.append(f"--env={name}={value}")
    else:
        env[name] = value
    with gunicorn(tmp_path, worker_class, *options, env=env) as master:
        assert master.exit_status() == WORKER_BOOT_ERROR
        log = master.log()
    assert message in log
    assert "Traceback" not in log
    assert "HaltServer" not in log
    assert sum(name in line for line in log.splitlines()) == 1, log


# -- run_gunicorn (gpool serve --workers N) -------------------------------------------


def test_run_gunicorn_serves_the_demo_app_in_two_workers(tmp_path: Path) -> None:
    listener = listening_socket()
    code = textwrap.dedent(
        f"""
        import sys
        from functools import partial
        from gpool._cli.demo import DEMO_APP
        from gpool._cli.serve import load_app
        from gpool._cli.gunicorn_app import run_gunicorn
        sys.exit(run_gunicorn(partial(load_app, DEMO_APP), bind="fd://{listener.fileno()}", workers=2, size=10,
                              max_idle=5.0, min_idle=0, overflow="backlog", log_level="info"))
        """
    )
    with launched([sys.executable, "-c", code], listener, tmp_path, {"GPOOL_MAX_TASKS_PER_WORKER": "3"}) as master:
        # Not "Booting worker": a signal that reaches a worker before it has set its
        # handlers is lost (gunicorn's fork inherits the master's).
        master.wait_for_log("Worker serving", count=2)
        # Every option reaches the workers, the defaults too: the shell's GPOOL_* do not count.
        assert (
            "WorkerPool(10, max_idle=5.0, min_idle=0, isolate=True, log_all_errors=False, overflow='backlog') "
            "per listener, server reclaim_idle_after=1.0"
        ) in master.log()
        # gpool serve's worker: GPoolPyWSGIWorker, leaving Ctrl-C to the master.
        assert "Using worker: gpool._cli.gunicorn_app.ServeWorker" in master.log()
        status, _headers, body = master.get("/")
        assert (status, body.startswith(b"Hello from gpool")) == (200, True)
        stats = json.loads(master.get("/stats")[2])
        assert stats["size"] == 10
        master.proc.send_signal(signal.SIGTERM)
        assert master.exit_status() == 0


def _not_loaded() -> Any:
    raise AssertionError("run_gunicorn loaded the app")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_idle": -1.0}, ValueError, "max_idle must be a positive, finite number of seconds, got -1.0"),
        ({"size": 2, "min_idle": 3}, ValueError, r"min_idle must not exceed size \(2\), got 3"),
        ({"size": None}, TypeError, r"size must be an int >= 1, got None \(NoneType\)"),
        ({"reclaim_idle_after": 0}, ValueError, "reclaim_idle_after must be a positive, finite number of seconds"),
        # A callable cannot travel to the workers as a GPOOL_* variable.
        ({"on_reject": print}, TypeError, "run_gunicorn\\(\\) got an unexpected keyword argument 'on_reject'"),
        ({"maxidle": 5}, TypeError, "run_gunicorn\\(\\) got an unexpected keyword argument 'maxidle'"),
    ],
)
def test_run_gunicorn_refuses_bad_pool_options_before_starting(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        run_gunicorn(_not_loaded, bind="127.0.0.1:1", workers=2, log_level="info", **options)


def test_run_gunicorn_takes_a_module_alone_as_gpool_serve_does() -> None:
    # gpool serve hands run_gunicorn its own loader: a module alone means its
    # 'application', else its 'app' (gunicorn alone would look for 'application').
    from tests.apps import pool_probe

    assert load_app("tests.apps.pool_probe") is pool_probe.app
