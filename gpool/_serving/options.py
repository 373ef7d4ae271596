"""The server's options, and the ``GPOOL_*`` environment variables of the gunicorn workers.

The pool's options are declared in :mod:`gpool._core.options`; the options of the
server around the pool (``reclaim_idle_after``) are declared here, with the same
:class:`~gpool._core.options.Option` type. This module also reads both tables'
variables from an environment (the gunicorn workers) and writes them (``gpool serve
--workers N``), so that the names are written in one place and read in the same one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._core.options import POOL_OPTIONS, Option, check_options, check_pool_options
from .._core.validate import check_seconds
from .keepalive import DEFAULT_RECLAIM_IDLE_AFTER

__all__ = [
    "SERVER_OPTIONS",
    "SettingError",
    "check_server_options",
    "environment_for",
    "pool_options_from",
    "server_options_from",
]

SERVER_OPTIONS: tuple[Option, ...] = (
    Option(
        name="reclaim_idle_after",
        check=check_seconds,
        default=DEFAULT_RECLAIM_IDLE_AFTER,
        help="when every slot is busy and a new client waits (and during a drain), hang up a "
        "keep-alive connection only once it has waited this long for its next request; busier "
        "ones are closed gracefully, with Connection: close",
        parse=float,
        allowed="a positive, finite number of seconds",
        flag="--reclaim-idle-after",
        variable="GPOOL_RECLAIM_IDLE_AFTER",
        metavar="SECONDS",
    ),
)


class SettingError(ValueError):
    """A ``GPOOL_*`` variable (or worker_connections) with a value gpool does not accept;
    the message is one line naming the variable, its value and what is allowed."""


def check_server_options(**values: Any) -> dict[str, Any]:
    """The server's options, checked, defaults filled in."""
    return check_options(SERVER_OPTIONS, values)


def pool_options_from(environ: Mapping[str, str], size: int) -> dict[str, Any]:
    """The WorkerPool options the ``GPOOL_*`` variables in *environ* set (unset or empty:
    left to the default), checked with *size* (gunicorn's ``worker_connections``) by
    :func:`~gpool._core.options.check_pool_options`. Raises :class:`SettingError`."""
    _checked(f"worker_connections={size!r}", check_pool_options, {"size": size})
    values, raw = _read(POOL_OPTIONS, environ)
    for name, value in values.items():
        # One at a time first, so that the message names the one variable at fault.
        _checked(raw[name], check_pool_options, {"size": size, name: value})
    # Then together: the rules that tie options to each other (soft before hard deadline).
    _checked(_labels(raw), check_pool_options, {"size": size, **values})
    return values


def server_options_from(environ: Mapping[str, str]) -> dict[str, Any]:
    """The server options the ``GPOOL_*`` variables in *environ* set; raises
    :class:`SettingError` like :func:`pool_options_from`."""
    values, raw = _read(SERVER_OPTIONS, environ)
    checked = _checked(_labels(raw), check_server_options, values)
    return {name: checked[name] for name in values}


def environment_for(values: Mapping[str, Any]) -> list[str]:
    """``NAME=VALUE`` for every variable of both tables, from *values* by option name
    (the default when absent; empty for None, which means the default), so that a
    worker sees exactly *values*, whatever the shell's environment holds."""
    return [
        f"{option.variable}={option.as_text(values.get(option.name, option.default))}"
        for option in (*POOL_OPTIONS, *SERVER_OPTIONS)
        if option.variable is not None
    ]


def _read(table: Sequence[Option], environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of *table*'s variables set in *environ*, parsed, and for each the
    label ``NAME='text'`` its errors start with."""
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for option in table:
        if option.variable is None or option.parse is None:
            continue
        text = environ.get(option.variable, "").strip()
        if not text:
            continue
        label = f"{option.variable}={text!r}"
        try:
            values[option.name] = option.parse(text)
        except ValueError:
            raise SettingError(f"{label}: {option.name} must be {option.allowed}") from None
        labels[option.name] = label
    return values, labels


def _labels(raw: Mapping[str, str]) -> str:
    return ", ".join(raw.values()) or "GPOOL_*"


def _checked(label: str, check: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = check(**values)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"{label}: {exc}") from None
    return result
