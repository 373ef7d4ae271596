"""What the figures were measured on: CPU, Python, library versions, gpool's source."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

__all__ = ["cpu_busy_seconds", "cpu_ids", "describe_machine", "process_cpu_seconds"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _git(src: str, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", src, *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_ids(cpus: str) -> set[int]:
    """The CPU numbers in a taskset CPU list (``0``, ``0,2``, ``1-3``); ValueError if
    *cpus* is not one."""
    ids: set[int] = set()
    for part in cpus.split(","):
        low, dash, high = part.partition("-")
        first, last = int(low), int(high if dash else low)
        if first < 0 or last < first:
            raise ValueError(f"not a CPU range: {part!r}")
        ids.update(range(first, last + 1))
    return ids


def cpu_busy_seconds(cpus: str) -> float | None:
    """Seconds the CPUs in the list *cpus* (taskset syntax) have spent running processes
    (any process) or stolen by the hypervisor, since boot; None where /proc/stat is
    missing. A run compares this with the server's own CPU time to see how much else ran
    on the server's CPU: the noise in its figures.
    """
    ids = cpu_ids(cpus)
    busy = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in ids:
                    # user nice system idle iowait irq softirq steal. Interrupts are left
                    # out: loopback traffic is processed in softirqs, which belong to the
                    # benchmark but to neither process. Steal (other VMs) counts.
                    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[:8])
                    busy += user + nice + system + steal
    except (OSError, ValueError):
        return None
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process *pid* (all its threads) so far, from
    ``/proc/PID/stat``: how another process's CPU time is read (a gunicorn worker's)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15, in clock ticks.
    ticks = os.sysconf("SC_CLK_TCK")
    return int(rest[11]) / ticks, int(rest[12]) / ticks


def describe_machine(alt: str | None = None) -> dict[str, Any]:
    import gpool

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gevent": _version("gevent"),
        "greenlet": _version("greenlet"),
        "gpool": gpool.__version__,
    }
    # Which gpool source was measured: its checkout's commit, and whether the package
    # had uncommitted changes at the time.
    src = os.path.dirname(os.path.dirname(os.path.abspath(gpool.__file__)))
    info["gpool_source"] = src
    commit = _git(src, "rev-parse", "--short", "HEAD")
    if commit:
        info["gpool_commit"] = commit
        info["gpool_modified"] = bool(_git(src, "status", "--porcelain", "--", "gpool"))
    if shutil.which("wrk"):
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        info["wrk"] = (done.stdout or done.stderr).split("[")[0].strip()
    if alt:
        info["alt_gpool"] = os.path.abspath(alt)
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info
