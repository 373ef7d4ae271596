"""Parent side: starting, talking to and stopping child processes.

Every child is started through :class:`Child`, pinned to a CPU with ``taskset`` when
that is possible, and registered until it is reaped, so :func:`kill_all` can end
whatever is left when a run fails or is interrupted. Children also die with the parent
(see :func:`gpool._bench.child.die_with_parent`).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Protocol, Sequence

from .machine import cpu_ids

__all__ = ["Child", "ChildFailed", "Pinning", "child_setup", "kill_all", "track", "untrack"]


class _Killable(Protocol):
    def kill(self) -> None: ...


# Every process started and not yet reaped (a Child, a gunicorn server), for kill_all.
_live: set[_Killable] = set()


def track(process: _Killable) -> None:
    """Have :func:`kill_all` end *process* (by its ``kill()``) until :func:`untrack`."""
    _live.add(process)


def untrack(process: _Killable) -> None:
    _live.discard(process)


# Children run at this niceness when the parent may raise priority (root, or
# CAP_SYS_NICE): background jobs on a shared machine then take far less of the CPUs
# the measured processes are pinned to. Set by Pinning.
_niceness: int | None = None


class ChildFailed(RuntimeError):
    """A child exited, timed out or said something unexpected."""


def child_setup() -> None:
    """Run in every forked child before it execs (``preexec_fn``).

    Asks Linux to kill the child when the parent dies (the request survives exec, so
    even a child killed in the middle of its imports cannot outlive the parent), and
    raises its priority if the parent found that it may.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if _niceness is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, _niceness)
        except OSError:
            pass


def _may_raise_priority(niceness: int) -> bool:
    """Whether this process may run children at *niceness* (tried on a throwaway child)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import os; os.setpriority(os.PRIO_PROCESS, 0, {niceness})"],
        capture_output=True,
    )
    return done.returncode == 0


class Pinning:
    """Which CPUs servers and load generators run on, and whether they can be pinned."""

    def __init__(self, server_cpu: str = "0", client_cpu: str = "1", niceness: int = 0) -> None:
        global _niceness
        self.server_cpu = server_cpu
        self.client_cpu = client_cpu
        self.note = ""
        self.niceness = 0
        if niceness and hasattr(os, "setpriority") and _may_raise_priority(niceness):
            self.niceness = _niceness = niceness
        available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if shutil.which("taskset") is None:
            self.enabled = False
            self.note = "taskset not found: servers and load share all CPUs (figures are less steady)"
        elif len(available) < 2:
            self.enabled = False
            self.note = "fewer than 2 CPUs: server and load share one CPU (figures are less steady)"
        else:
            self.enabled = True

    @property
    def client_cpus(self) -> int:
        """How many CPUs the load generator may use."""
        if not self.enabled:
            return 1
        return max(len(cpu_ids(self.client_cpu)), 1)

    def command(self, cpu: str, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", cpu, *argv] if self.enabled else list(argv)

    def describe(self) -> str:
        where = f"server on CPU {self.server_cpu}, load on CPU {self.client_cpu}" if self.enabled else "not pinned"
        return where + (f", nice {self.niceness}" if self.niceness else "")


class Child:
    """A child process that speaks the line protocol of :mod:`gpool._bench.child`."""

    def __init__(self, argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
        self.what = what
        # Closed in reap(), which every way out of a run goes through.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._said = ""  # what it wrote to stderr, kept once the file is closed
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            preexec_fn=child_setup,
            env=env,
        )
        track(self)

    @staticmethod
    def python_module(module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", f"gpool._bench.{module}", *args]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ChildFailed(f"{self.what} exited early: {self.stderr_text()}") from None

    def expect(self, word: str, timeout: float) -> Any:
        """Wait for the next message; it must be *word*. Returns its payload."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{self.what}: no {word} within {timeout:g} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self.proc.stdout.readline().decode()
            if not line:
                self.proc.wait()
                raise ChildFailed(
                    f"{self.what} exited (status {self.proc.returncode}) before {word}: {self.stderr_text()}"
                )
            got, _, payload = line.strip().partition(" ")
            if got != word:
                raise ChildFailed(f"{self.what}: expected {word}, got {line.strip()[:300]!r}")
            return json.loads(payload)

    def ask(self, command: str, word: str, timeout: float = 30.0) -> Any:
        self.send(command)
        return self.expect(word, timeout)

    def finish(self, word: str | None = None, timeout: float = 15.0) -> Any:
        """Close stdin (the child's cue to stop), read its last *word* message, reap it."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.expect(word, timeout) if word else None
        finally:
            self.reap(timeout)

    def stderr_text(self, limit: int = 2000) -> str:
        """What the child wrote to stderr (also after it was reaped)."""
        if not self._stderr.closed:
            try:
                self._stderr.seek(0)
                self._said = self._stderr.read().decode(errors="replace").strip()
            except (OSError, ValueError):
                pass
        return self._said[-limit:]

    def reap(self, timeout: float = 5.0) -> None:
        """Wait up to *timeout* seconds for the child to exit, then kill it."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            untrack(self)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.stderr_text()
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.reap()


def kill_all() -> None:
    """Kill every child still running (after an error or an interrupt)."""
    for child in list(_live):
        child.kill()
