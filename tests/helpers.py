"""Small tools the tests share."""

from __future__ import annotations

from typing import Any, Callable

import gevent
from gevent.event import AsyncResult


def in_hub(fn: Callable[[], Any]) -> Any:
    """Run *fn* in the hub, as a server's accept callback runs, and return its result."""
    result: AsyncResult = AsyncResult()

    def callback() -> None:
        try:
            result.set(fn())
        except BaseException as exc:
            result.set_exception(exc)

    gevent.get_hub().loop.run_callback(callback)
    return result.get(timeout=5)
