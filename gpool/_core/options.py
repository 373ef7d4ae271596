"""The table of WorkerPool's options: each declared once, for every entry point.

An :class:`Option` says how a value is checked (the rules :class:`~gpool.WorkerPool`
applies), its default, one line of help, and where a server takes it from: the
``gpool serve`` flag and the ``GPOOL_*`` environment variable of the gunicorn workers,
or None where it makes no sense there (``on_reject`` is a callable; ``size`` comes
from gunicorn's ``worker_connections``). ``WorkerPool``, ``gpool serve``, the gunicorn
workers and ``run_gunicorn`` all read this table, so an option added here reaches all
of them, checked by the same rules and refused with the same words.

Server options (``reclaim_idle_after``) use the same :class:`Option` type but belong
to the serving layer, which declares them itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from .overflow import OVERFLOW_POLICIES
from .validate import check_bool, check_callable, check_choice, check_count, check_seconds

__all__ = [
    "POOL_OPTIONS",
    "Option",
    "check_options",
    "check_pool_option",
    "check_pool_options",
    "describe_pool",
    "parse_bool",
]

# A rule tying options together: given the values checked so far and the values as
# passed (messages show what the caller wrote), it raises or returns nothing.
Rule = Callable[[Mapping[str, Any], Mapping[str, Any]], None]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SECONDS = "a positive, finite number of seconds"


def parse_bool(text: str) -> bool:
    """``1``/``0`` (also true/false, yes/no, on/off, any case); ValueError otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(text)


@dataclass(frozen=True)
class Option:
    """One option: its rules, its default, its help, and the names servers give it."""

    name: str
    """The keyword argument, as it starts the option's error messages."""
    check: Callable[[str, object], Any]
    """``check(name, value)``: the value as used, or TypeError/ValueError."""
    default: Any
    help: str
    """One line, for ``gpool serve --help`` and the documentation."""
    parse: Callable[[str], Any] | None = None
    """Text (a flag's or a variable's value) to a value; ValueError if it does not parse.
    None: the option cannot be given as text."""
    allowed: str = ""
    """What *parse* accepts, for text that does not even parse."""
    flag: str | None = None
    """The ``gpool serve`` flag; for a bool, the switch that turns the default around."""
    variable: str | None = None
    """The ``GPOOL_*`` environment variable the gunicorn workers read."""
    metavar: str | None = None
    server_default: Any = None
    """The default where a server builds the pool, if not *default*: a server needs a
    bound (``size``: 1000, as gunicorn's ``worker_connections``)."""
    none_means: str = "none"
    """What a None value does, for help texts: "off", "no limit"."""

    @property
    def serving_default(self) -> Any:
        return self.default if self.server_default is None else self.server_default

    def describe(self, value: Any) -> str:
        """*value* in words for a help text: ``10.0``, ``on``, ``off``, ``no limit``."""
        if value is None:
            return self.none_means
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    def as_text(self, value: Any) -> str:
        """*value* as *parse* reads it back (None: empty, which means the default)."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)


def _check_optional_seconds(name: str, value: object) -> float | None:
    return None if value is None else check_seconds(name, value)


def _check_overflow(name: str, value: object) -> str:
    return check_choice(name, value, OVERFLOW_POLICIES)


POOL_OPTIONS: tuple[Option, ...] = (
    # In WorkerPool's signature order: the first bad option in it is the one reported.
    Option(
        name="size",
        check=partial(check_count, minimum=1, allow_none=True),
        default=None,
        help="most requests (tasks) served at once, and so most worker greenlets",
        parse=int,
        allowed="an int >= 1",
        flag="--size",
        metavar="N",
        server_default=1000,
        none_means="no limit",
    ),
    Option(
        name="max_idle",
        check=check_seconds,
        default=10.0,
        help="retire a worker greenlet idle this long",
        parse=float,
        allowed=_SECONDS,
        flag="--max-idle",
        variable="GPOOL_MAX_IDLE",
        metavar="SECONDS",
    ),
    Option(
        name="min_idle",
        check=partial(check_count, minimum=0),
        default=0,
        help="idle worker greenlets kept however long they idle (at most the size)",
        parse=int,
        allowed="an int >= 0",
        flag="--min-idle",
        variable="GPOOL_MIN_IDLE",
        metavar="N",
    ),
    Option(
        name="max_tasks_per_worker",
        check=partial(check_count, minimum=1, allow_none=True),
        default=None,
        help="retire a worker greenlet after this many tasks, and start a fresh one",
        parse=int,
        allowed="an int >= 1",
        flag="--max-tasks-per-worker",
        variable="GPOOL_MAX_TASKS_PER_WORKER",
        metavar="N",
        none_means="never",
    ),
    Option(
        name="isolate",
        check=check_bool,
        default=True,
        help="keep the contextvars and threading.local/gevent.local values a task (or a request "
        "on a keep-alive connection) sets from the next one on its worker greenlet; "
        "--no-isolate lets them through, about a microsecond faster",
        parse=parse_bool,
        allowed="1 or 0 (also true/false, yes/no, on/off)",
        flag="--no-isolate",
        variable="GPOOL_ISOLATE",
    ),
    Option(
        name="log_all_errors",
        check=check_bool,
        default=False,
        help="also log network errors that only mean the client went away (broken pipe, "
        "reset, timeout), which otherwise go to the gpool logger at DEBUG",
        parse=parse_bool,
        allowed="1 or 0 (also true/false, yes/no, on/off)",
        flag="--log-all-errors",
        variable="GPOOL_LOG_ALL_ERRORS",
    ),
    Option(
        name="overflow",
        check=_check_overflow,
        default="backlog",
        help="when every slot is busy: 'backlog' leaves new clients waiting in the listen "
        "queue, 'reject' answers them 503 at once",
        parse=str,
        allowed="'backlog' or 'reject'",
        flag="--overflow",
        variable="GPOOL_OVERFLOW",
        metavar="{backlog,reject}",
    ),
    Option(
        name="on_reject",
        check=partial(check_callable, allow_none=True),
        default=None,
        help="with overflow='reject', called as on_reject(socket, address) for each raw "
        "connection turned away (a callable: no flag, no variable)",
    ),
    Option(
        name="max_detached",
        check=partial(check_count, minimum=0, allow_none=True),
        default=None,
        help="most requests detached from the pool with gpool.detach() (long-lived streams)",
        parse=int,
        allowed="an int >= 0",
        flag="--max-detached",
        variable="GPOOL_MAX_DETACHED",
        metavar="N",
        none_means="the size",
    ),
    Option(
        name="soft_deadline",
        check=_check_optional_seconds,
        default=None,
        help="log the stack of a request still running after this long, once",
        parse=float,
        allowed=_SECONDS,
        flag="--soft-deadline",
        variable="GPOOL_SOFT_DEADLINE",
        metavar="SECONDS",
        none_means="off",
    ),
    Option(
        name="hard_deadline",
        check=_check_optional_seconds,
        default=None,
        help="kill a request still running after this long (its connection is closed) and "
        "retire its worker greenlet; must exceed the soft deadline",
        parse=float,
        allowed=_SECONDS,
        flag="--hard-deadline",
        variable="GPOOL_HARD_DEADLINE",
        metavar="SECONDS",
        none_means="off",
    ),
)


def _min_idle_within_size(checked: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    size = checked["size"]
    if size is not None and checked["min_idle"] > size:
        raise ValueError(f"min_idle must not exceed size ({size}), got {given['min_idle']!r}")


def _soft_before_hard(checked: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    soft, hard = checked["soft_deadline"], checked["hard_deadline"]
    if soft is not None and hard is not None and soft >= hard:
        raise ValueError(
            f"soft_deadline must be less than hard_deadline ({given['hard_deadline']!r}), "
            f"got {given['soft_deadline']!r}"
        )


# Each rule runs right after the later of its options is checked, so that the first
# problem in signature order is still the one reported.
_POOL_RULES: dict[str, Rule] = {"min_idle": _min_idle_within_size, "hard_deadline": _soft_before_hard}


def check_options(
    table: Sequence[Option], values: Mapping[str, Any], rules: Mapping[str, Rule] | None = None
) -> dict[str, Any]:
    """Every option of *table*, from *values* or its default, checked in table order.

    Returns the values as used, by name. Raises TypeError for a name the table lacks,
    else the first option's TypeError/ValueError.
    """
    names = {option.name for option in table}
    for name in values:
        if name not in names:
            raise TypeError(f"unexpected option {name!r}; expected one of {', '.join(sorted(names))}")
    given = {option.name: values.get(option.name, option.default) for option in table}
    checked: dict[str, Any] = {}
    for option in table:
        checked[option.name] = option.check(option.name, given[option.name])
        rule = (rules or {}).get(option.name)
        if rule is not None:
            rule(checked, given)
    return checked


def check_pool_options(**values: Any) -> dict[str, Any]:
    """WorkerPool's options, checked as WorkerPool checks them (the same errors, the
    same order), defaults filled in: what ``WorkerPool(**result)`` would use."""
    return check_options(POOL_OPTIONS, values, _POOL_RULES)


def check_pool_option(name: str, value: object) -> Any:
    """One pool option on its own, by the rules of its table entry (``resize()``)."""
    option = next(option for option in POOL_OPTIONS if option.name == name)
    return option.check(name, value)


def describe_pool(values: Mapping[str, Any]) -> str:
    """``WorkerPool(1000, max_idle=5.0, ...)``: the call building a pool with *values*,
    in table order, leaving out what is None (the default's own word for it)."""
    size = values.get("size")
    arguments = [repr(size)] if size is not None else []
    arguments += [
        f"{option.name}={values[option.name]!r}"
        for option in POOL_OPTIONS
        if option.name != "size" and values.get(option.name) is not None
    ]
    return f"WorkerPool({', '.join(arguments)})"
