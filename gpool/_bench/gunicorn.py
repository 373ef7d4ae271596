"""Parent side of the gunicorn scenarios: ``gunicorn -w 1`` with gevent's worker classes
and with gpool's, one server process at a time.

The strategies map onto worker classes (:data:`WORKERS`): ``pool`` is the anchor, since
gunicorn's gevent workers spawn on ``gevent.pool.Pool``; ``gpool`` is gpool's worker
class for the same server; ``gpool-noiso`` is that class with ``GPOOL_ISOLATE=0``.

Each server is handed a socket that this process bound and listens on (``--bind
fd://N``): no port to guess, and the first request waits in the listen queue until the
worker is up. The CPU time measured is the worker process's (user and system, from
``/proc/PID/stat``), not the master's. This process imports neither gunicorn nor
gevent: whether gunicorn is usable is asked of a child (:func:`unavailable`).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from .apps import BODY, http_get
from .machine import process_cpu_seconds
from .procs import ChildFailed, Pinning, child_setup, track, untrack
from .sockets import listen

__all__ = ["INSTALL_HINT", "STRATEGIES", "WORKERS", "GunicornServer", "labels", "unavailable"]

INSTALL_HINT = "pip install 'gpool[bench]'"
WORKER_CONNECTIONS = 1000  # gunicorn's default; the pool's size for every class
_NOISO = (("GPOOL_ISOLATE", "0"),)

# Per server kind, per strategy: the worker class and what it adds to the environment.
WORKERS: dict[str, dict[str, tuple[str, tuple[tuple[str, str], ...]]]] = {
    "gunicorn-gevent": {
        "pool": ("gevent", ()),
        "gpool": ("gpool.workers.GPoolWorker", ()),
        "gpool-noiso": ("gpool.workers.GPoolWorker", _NOISO),
    },
    "gunicorn-pywsgi": {
        "pool": ("gevent_pywsgi", ()),
        "gpool": ("gpool.workers.GPoolPyWSGIWorker", ()),
        "gpool-noiso": ("gpool.workers.GPoolPyWSGIWorker", _NOISO),
    },
}
STRATEGIES = ("pool", "gpool", "gpool-noiso")

# Asked in a child: what is missing, and the flags this gunicorn needs.
_PROBE = """\
import importlib, json, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
flags = []
if "gunicorn" not in missing:
    from gunicorn.config import KNOWN_SETTINGS
    # Parallel masters would share one control socket; turned off where it exists.
    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        flags.append("--no-control-socket")
print(json.dumps({"missing": missing, "flags": flags}))
"""


def labels(kind: str) -> dict[str, str]:
    """How the report names each strategy of server *kind*."""
    out = {}
    for strategy, (worker_class, env) in WORKERS[kind].items():
        text = f"gunicorn -k {worker_class}"
        out[strategy] = text + "".join(f", {k}={v}" for k, v in env)
    return out


@functools.cache
def _probe(app: str) -> tuple[str | None, tuple[str, ...]]:
    """Why the gunicorn scenarios cannot run with *app* (None: they can), and the flags
    this gunicorn needs."""
    # gunicorn's gevent workers import packaging, which gunicorn does not declare.
    wanted = ["gunicorn", "packaging", "gevent"] + (["flask"] if app == "flask" else [])
    done = subprocess.run([sys.executable, "-c", _PROBE, *wanted], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"gunicorn fails to load: {last} ({INSTALL_HINT})", ()
    answer = json.loads(done.stdout)
    missing = answer["missing"]
    why = f"{', '.join(missing)} not importable ({INSTALL_HINT})" if missing else None
    return why, tuple(answer["flags"])


def unavailable(app: str) -> str | None:
    """Why the gunicorn scenarios cannot run with *app* here, or None when they can."""
    return _probe(app)[0]


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    rest = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(rest[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class GunicornServer:
    """One ``gunicorn -w 1`` master and its worker, pinned to the server CPU."""

    def __init__(self, kind: str, strategy: str, app: str, pinning: Pinning, timeout: float = 30.0) -> None:
        worker_class, extra_env = WORKERS[kind][strategy]
        self.what = labels(kind)[strategy]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _reap
        self._said = ""
        # No GPOOL_* setting of the caller's may reach one server and not another.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPOOL_")}
        env.update(extra_env)
        with listen(2048, green=False) as listener:  # gunicorn's default backlog
            self.port: int = listener.getsockname()[1]
            fd = listener.fileno()
            argv = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", worker_class, "--bind", f"fd://{fd}"]
            argv += ["--worker-connections", str(WORKER_CONNECTIONS), "--keep-alive", "5"]
            argv += ["--graceful-timeout", "5", "--log-level", "warning", *_probe(app)[1]]
            argv.append(f"gpool._bench.apps:create_app({app!r})")
            self.proc = subprocess.Popen(
                pinning.command(pinning.server_cpu, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,
                pass_fds=[fd],
                preexec_fn=child_setup,
            )
        # The master is pid self.proc.pid: taskset execs it in place.
        track(self)
        self.pid = 0  # the worker, once it answers
        try:
            self._wait_answering(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            status, body = http_get(self.port, "/", timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise ChildFailed(
                f"{self.what} did not answer within {timeout:g} s ({exc}): {self.stderr_text()}"
            ) from None
        if (status, body) != (200, BODY):
            raise ChildFailed(f"{self.what} answered {status} {body[:200]!r}: {self.stderr_text()}")
        while time.monotonic() < deadline:  # it has answered: its worker exists
            workers = _children_of(self.proc.pid)
            if len(workers) == 1:
                self.pid = workers[0]
                return
            time.sleep(0.05)
        raise ChildFailed(f"{self.what}: expected one worker process, found {_children_of(self.proc.pid)}")

    def sample(self) -> dict[str, float]:
        """The worker's user and system CPU seconds so far."""
        user_s, sys_s = process_cpu_seconds(self.pid)
        return {"user_s": user_s, "sys_s": sys_s}

    def stderr_text(self, limit: int = 2000) -> str:
        if not self._stderr.closed:
            self._stderr.seek(0)
            self._said = self._stderr.read().decode(errors="replace").strip()
        return self._said[-limit:]

    def finish(self, timeout: float = 15.0) -> tuple[dict[str, Any], str]:
        """SIGTERM, a bounded wait, then SIGKILL; the exit status and what it wrote."""
        self._stop(signal.SIGTERM, timeout)
        return {"returncode": self.proc.returncode}, self.stderr_text()

    def kill(self) -> None:
        self._stop(signal.SIGKILL, 5.0)

    def _stop(self, signo: int, timeout: float) -> None:
        workers = [self.pid] if self.pid else _children_of(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # A worker notices a dead master within a second or so; one that does not is killed.
        deadline = time.monotonic() + 2.0
        for pid in workers:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        untrack(self)
        self.stderr_text()
        self._stderr.close()
