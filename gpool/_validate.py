"""Checks for constructor options: each error names the option, the rule and the value."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable

__all__ = ["check_bool", "check_callable", "check_choice", "check_count", "check_seconds"]


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
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return seconds


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
