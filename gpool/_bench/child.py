"""What every child process of the benchmark does first, and how it talks to the parent.

A child reports on stdout, one line per message: a word, a space, then JSON
(``PORT {"port": 41234}``). It takes commands on stdin, one per line, and treats
end-of-file on stdin as "stop now". No gevent here: the load generator uses this too.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from typing import Any

__all__ = ["die_with_parent", "raise_fd_limit", "rss_kb", "say"]


def die_with_parent() -> None:
    """Have Linux kill this process if the parent dies (best effort), so an interrupted
    run never leaves a server or load generator behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards *wanted* (at most the hard limit);
    return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kb() -> int:
    """This process's resident set size now, in KiB (the peak where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def say(word: str, payload: Any) -> None:
    """Send one message to the parent."""
    sys.stdout.write(f"{word} {json.dumps(payload)}\n")
    sys.stdout.flush()
