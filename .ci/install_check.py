"""Start what one install of gpool promises, in the venv that runs this file.

Called by .ci/install-check, once per fresh venv, as ``VENV/bin/python install_check.py
WHAT WORKDIR`` with WHAT one of ``plain``, ``gunicorn``, ``prometheus``, ``bench``, ``websocket``. It
runs from WORKDIR (outside the clone), so ``import gpool`` finds the installed copy.
Every wait is bounded; the first failure raises, which exits 1 with the reason.
"""

from __future__ import annotations

import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
APP = """def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(*flags: str) -> tuple[subprocess.Popen[str], int]:
    """``gpool serve --bind 127.0.0.1:0 FLAGS``, and the port it printed."""
    argv = [str(BIN / "gpool"), "serve", "--bind", "127.0.0.1:0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("gpool: serving http://127.0.0.1:"):
            return proc, int(line.split("127.0.0.1:", 1)[1].split()[0])
    stop(proc)
    raise AssertionError(f"gpool serve did not start within 30 s: {''.join(seen)[-2000:]}")


def check_plain() -> None:
    import gevent
    from gevent import socket as gsocket
    from gevent.server import StreamServer

    from gpool import WorkerPool

    def handle(sock: object, _address: object) -> None:
        sock.sendall(sock.recv(64).upper())  # type: ignore[attr-defined]

    pool = WorkerPool(10)
    server = StreamServer(("127.0.0.1", 0), handle, spawn=pool)
    server.start()
    try:
        with gevent.Timeout(10):
            client = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
            client.connect(("127.0.0.1", server.server_port))
            client.sendall(b"ping")
            assert client.recv(64) == b"PING"
            client.close()
    finally:
        server.stop(timeout=5)
        pool.close()
    assert pool.stats().tasks_completed == 1, pool.stats()
    print("  StreamServer + WorkerPool answered")
    proc, port = serve()
    try:
        status, body = get(port, "/")
        assert status == 200 and body, (status, body)
    finally:
        stop(proc)
    assert proc.returncode == 0, f"gpool serve exited {proc.returncode} on SIGTERM"
    print(f"  gpool serve answered / ({body[:40]!r})")


def check_gunicorn() -> None:
    Path("check_app.py").write_text(APP)
    for worker_class in ("gpool.workers.GPoolWorker", "gpool.workers.GPoolPyWSGIWorker"):
        # gunicorn cannot bind port 0; it is handed a socket bound and listening here
        # instead (--bind fd://N), so a request can be sent at once: it waits in the
        # listen queue until the worker is up. No port to guess, nothing to poll.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            port, fd = listener.getsockname()[1], listener.fileno()
            argv = [str(BIN / "gunicorn"), "-k", worker_class, "-w", "1", "--bind", f"fd://{fd}", "check_app:app"]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, pass_fds=[fd])
        try:
            answer: tuple[int, bytes] | OSError = get(port, "/", timeout=30)
        except OSError as exc:
            answer = exc
        finally:
            stop(proc)
        output = proc.stdout.read() if proc.stdout else ""
        assert answer == (200, b"ok\n"), f"gunicorn -k {worker_class}: {answer!r}\n{output[-3000:]}"
        assert "Traceback" not in output, output[-3000:]
        assert proc.returncode == 0, f"gunicorn exited {proc.returncode} on SIGTERM\n{output[-3000:]}"
        print(f"  gunicorn -k {worker_class} answered")


def check_prometheus() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    proc, port = serve()
    try:
        status, body = get(port, "/metrics")
    finally:
        stop(proc)
    assert status == 200, (status, body[:500])
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert "gpool_tasks_started" in names, sorted(names)
    print(f"  /metrics parsed: {len(names)} families")


def check_bench() -> None:
    # The real command, on its smallest documented run (one dispatch round): the same
    # report and chart code as --quick, in seconds instead of a minute.
    # One short gunicorn run too: the extra brings gunicorn, packaging and Flask, and
    # without them the scenario would be skipped, not failed.
    png = Path("check.png")
    argv = [str(BIN / "gpool"), "bench", "--scenario", "dispatch", "--strategy", "gpool", "--rounds", "1"]
    argv += ["--dispatch-rounds", "1", "--tasks", "100", "--load", "builtin", "--png", str(png)]
    argv += ["--scenario", "gunicorn-gevent-keepalive", "--duration", "0.3", "--warmup", "0", "--connections", "4"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipping" not in done.stderr, done.stderr[-3000:]
    assert "gunicorn -k gpool.workers.GPoolWorker" in done.stdout, done.stdout[-3000:]
    assert f"wrote {png.resolve()}" in done.stderr, done.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    print(f"  gpool bench ran a gunicorn scenario and wrote a {png.stat().st_size:,}-byte PNG")


def check_websocket() -> None:
    import base64

    import gevent
    from gevent import socket as gsocket

    from gpool import WorkerPool
    from gpool.websocket import WebSocketHandler
    from gpool.wsgi import WSGIServer

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        ws = environ["wsgi.websocket"]
        ws.send(ws.receive())  # type: ignore[attr-defined]
        return []

    pool = WorkerPool(10)
    server = WSGIServer(("127.0.0.1", 0), app, spawn=pool, handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        with gevent.Timeout(10):
            client = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
            client.connect(("127.0.0.1", server.server_port))
            key = base64.b64encode(os.urandom(16))
            client.sendall(
                b"GET / HTTP/1.1\r\nHost: check\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            mask = os.urandom(4)
            client.sendall(b"\x81\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi")))
            frame = head.split(b"\r\n\r\n", 1)[1]
            while len(frame) < 4:
                frame += client.recv(64)
            assert frame[:4] == b"\x81\x02hi", frame
            client.close()
    finally:
        server.stop(timeout=5)
        pool.close()
    print("  a WebSocket on gpool.wsgi.WSGIServer echoed a frame")


def main() -> int:
    what, workdir = sys.argv[1], sys.argv[2]
    os.chdir(workdir)
    # Nothing else may be there to hide a missing dependency (pytest brings packaging).
    try:
        import pytest  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("pytest is installed in this venv: it is not a fresh one")
    checks = {
        "plain": check_plain,
        "gunicorn": check_gunicorn,
        "prometheus": check_prometheus,
        "bench": check_bench,
        "websocket": check_websocket,
    }
    checks[what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
