"""Checks for options and arguments: each error names the parameter, what is allowed and the value.

A wrong type raises ``TypeError`` and a wrong value ``ValueError``, always as
``"<name> must be <allowed>, got <value!r>"``, with the value's type after a wrong type.
Every check runs before the caller changes anything, so a refused call leaves no trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any, Callable

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_count",
    "check_exception",
    "check_seconds",
    "check_servers",
    "check_timeout",
]


def check_count(name: str, value: object, *, minimum: int, allow_none: bool = False) -> int | None:
    """An int >= *minimum* (or None when *allow_none*)."""
    if value is None and allow_none:
        return None
    allowed = f"None or an int >= {minimum}" if allow_none else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_seconds(name: str, value: object) -> float:
    """A finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number of seconds, got {value!r} ({type(value).__name__})")
    seconds = _as_float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return seconds


def check_timeout(name: str, value: object) -> float | None:
    """How long a call may wait, by gevent's rules: None (or +inf) waits as long as it
    takes, zero or a negative number does not wait. NaN is refused: it means no rule.

    Returned ready for gevent: None for no limit, otherwise a float >= 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be None or a number of seconds, got {value!r} ({type(value).__name__})")
    seconds = _as_float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be None or a number of seconds, not NaN, got {value!r}")
    if seconds == math.inf:
        return None
    return max(seconds, 0.0)


def check_bool(name: str, value: object) -> bool:
    """Exactly True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of the strings in *choices*."""
    if not isinstance(value, str) or value not in choices:
        allowed = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_callable(name: str, value: object, *, allow_none: bool = False) -> Callable[..., Any] | None:
    """A callable (or None when *allow_none*)."""
    if value is None and allow_none:
        return None
    if not callable(value):
        allowed = "None or a callable" if allow_none else "a callable"
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    return value


def check_exception(name: str, value: object) -> type[BaseException] | BaseException:
    """An exception instance, or a BaseException subclass that can be built without
    arguments (it is instantiated once here, to find out, and again where it is raised)."""
    allowed = "an exception instance or a BaseException subclass that takes no arguments"
    if isinstance(value, BaseException):
        return value
    if isinstance(value, type) and issubclass(value, BaseException):
        try:
            value()
        except Exception as exc:  # whatever it raised, it cannot be raised bare
            raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})") from exc
        return value
    raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")


def check_servers(name: str, value: object) -> list[Any]:
    """A gevent server (anything with ``close()`` and a ``pool``), or an iterable of them.

    Returned as a list, every item checked, so a caller can act on all or on none.
    """
    if _is_server(value):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be a gevent server or an iterable of servers, got {value!r} ({type(value).__name__})"
        )
    servers = list(value)
    for index, server in enumerate(servers):
        if not _is_server(server):
            raise TypeError(f"{name}[{index}] must be a gevent server, got {server!r} ({type(server).__name__})")
    return servers


def _is_server(value: object) -> bool:
    return callable(getattr(value, "close", None)) and hasattr(value, "pool")


def _as_float(value: Real) -> float:
    try:
        return float(value)
    except OverflowError:  # an int too large for a float: as good as infinite
        return -math.inf if value < 0 else math.inf
