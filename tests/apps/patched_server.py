"""``gpool.wsgi.WSGIServer`` serving keepalive_probe:app in a monkey-patched process.

Run as ``python patched_server.py FD ISOLATE``: FD is an inherited listening socket,
ISOLATE ``1`` or ``0`` is the WorkerPool's ``isolate``. Patches everything first (as
an app behind ``gevent.monkey.patch_all()`` would), so ``threading.local`` in the app
is gevent's. Prints ``serving`` once it accepts; stops on SIGTERM or when stdin ends.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.socket  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from keepalive_probe import app  # noqa: E402

from gpool import WorkerPool  # noqa: E402
from gpool.wsgi import WSGIServer  # noqa: E402


def _wait_for_end_of_stdin(stop: gevent.event.Event) -> None:
    # A plain read of stdin would block the whole process: wait for it cooperatively.
    fd = sys.stdin.fileno()
    while True:
        gevent.socket.wait_read(fd)
        if not os.read(fd, 4096):
            stop.set()
            return


def main() -> None:
    fd, isolate = int(sys.argv[1]), sys.argv[2] == "1"
    listener = socket.socket(fileno=fd)
    server = WSGIServer(listener, app, spawn=WorkerPool(4, isolate=isolate), log=None)
    server.start()
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.spawn(_wait_for_end_of_stdin, stop)
    print("serving", flush=True)
    stop.wait()
    server.stop(timeout=1)


if __name__ == "__main__":
    main()
