"""The overflow policy: what a full pool does with a task it has no slot for.

``"backlog"`` (gevent's behaviour) makes servers stop accepting while the pool is
full, so excess clients wait in the kernel's listen backlog. ``"reject"`` keeps them
accepting and turns the excess away at once. The pool decides *when* to turn a task
away and counts it; *how* a connection is answered (a 503 for HTTP, the user's
*on_reject* for raw TCP) is the serving layer's business, so the core knows no
protocol. The serving layer installs that answer here when it is imported, which
``import gpool`` always does.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any, Callable, Optional

__all__ = ["OVERFLOW_POLICIES", "Answer", "OverloadLog", "answer_for", "install_answerer"]

_log = logging.getLogger("gpool")

OVERFLOW_POLICIES = ("backlog", "reject")

# Turns a rejected connection away: answer(on_reject, hub). Runs in the caller (the
# hub, in a server's accept callback), so it must not block.
Answer = Callable[[Optional[Callable[..., Any]], Any], None]
# Given a task spawn() could not place, the way to turn it away, or None when the task
# is not a server's connection (then the caller gets PoolFull).
Answerer = Callable[[Callable[..., Any], tuple[Any, ...]], Optional[Answer]]

_answerer: Answerer | None = None


def install_answerer(answerer: Answerer) -> None:
    """Set how rejected tasks are recognised and answered (the serving layer's job)."""
    global _answerer
    _answerer = answerer


def answer_for(func: Callable[..., Any], args: tuple[Any, ...]) -> Answer | None:
    """How to turn away the task ``func(*args)``, or None if it is not a connection."""
    if _answerer is None:
        return None
    return _answerer(func, args)


class OverloadLog:
    """A WARNING when connections are turned away: at once, then at most once a minute."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._unreported = 0
        self._next_report = 0.0

    def note(self, size: int | None) -> None:
        self._unreported += 1
        now = monotonic()
        if now >= self._next_report:
            _log.warning(
                "pool full (size=%s, overflow='reject'): turned away %d connection(s) since the last report",
                size,
                self._unreported,
            )
            self._unreported = 0
            self._next_report = now + self._interval
