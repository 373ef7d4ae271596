"""One options table: every option with a flag and a variable reaches the pool from
``gpool serve`` (one process and ``--workers``), from ``GPOOL_*`` under gunicorn, and
from ``run_gunicorn``; a bad value is refused the same way by each; and the
``GPOOL_*`` list in :mod:`gpool.workers`' documentation is the table's.

The subprocess tests reuse the helpers of test_serve.py (``gpool serve``) and
test_gunicorn.py (``gunicorn -k``): real processes, waits bounded, on log lines.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

import gpool.workers
from gpool._core.options import POOL_OPTIONS, Option, check_pool_options
from gpool._serving.options import (
    SERVER_OPTIONS,
    SettingError,
    check_server_options,
    environment_for,
    pool_options_from,
    server_options_from,
)

from ..serving.test_gunicorn import GPOOL_WORKER, WORKER_BOOT_ERROR, gunicorn
from .test_serve import HINT, fails, serving

TABLE = (*POOL_OPTIONS, *SERVER_OPTIONS)
EVERYWHERE = [option for option in TABLE if option.flag and option.variable]

# A value other than the default for each option reachable everywhere, and text that
# is refused (None for a switch: a flag cannot be given a bad value).
SAMPLES: dict[str, tuple[Any, str | None]] = {
    "max_idle": (2.5, "0"),
    "min_idle": (2, "-1"),
    "max_tasks_per_worker": (3, "0"),
    "isolate": (False, "maybe"),
    "log_all_errors": (True, "sometimes"),
    "overflow": ("reject", "drop"),
    "max_detached": (4, "-1"),
    "soft_deadline": (7.5, "0"),
    "hard_deadline": (9.0, "-2"),
    "reclaim_idle_after": (0.5, "soon"),
}


def _ids(option: Option) -> str:
    return option.name


def _is_pool_option(option: Option) -> bool:
    return option in POOL_OPTIONS


def _flag_args(option: Option, value: Any) -> list[str]:
    """The command line setting *option* to *value*: a bool's flag is a switch."""
    assert option.flag is not None
    if isinstance(value, bool):
        assert value != option.default, "a switch only turns the default around"
        return [option.flag]
    return [option.flag, option.as_text(value)]


def _shown(option: Option, value: Any) -> str:
    """How a log line of a pool (``WorkerPool(..., name=value)``) or a server
    (``server name=value``) shows *option* set to *value*."""
    shown = f"{option.name}={value!r}"
    return shown if _is_pool_option(option) else f"server {shown}"


def _parses(option: Option, text: str) -> bool:
    assert option.parse is not None
    try:
        option.parse(text)
    except ValueError:
        return False
    return True


def _refusal(option: Option, text: str) -> str:
    """The options' own message for *text*: the parser's "what is allowed", else the check's."""
    assert option.parse is not None
    try:
        value = option.parse(text)
    except ValueError:
        return f"{option.name} must be {option.allowed}"
    check = check_pool_options if _is_pool_option(option) else check_server_options
    with pytest.raises((TypeError, ValueError)) as info:
        check(**{option.name: value})
    return str(info.value)


# -- the table itself -----------------------------------------------------------------


def test_every_option_reachable_everywhere_has_a_sample() -> None:
    assert set(SAMPLES) == {option.name for option in EVERYWHERE}
    # What makes no sense in a server has neither flag nor variable.
    on_reject = next(option for option in POOL_OPTIONS if option.name == "on_reject")
    assert (on_reject.flag, on_reject.variable) == (None, None)
    # size comes from gunicorn's worker_connections, not from a variable.
    size = next(option for option in POOL_OPTIONS if option.name == "size")
    assert (size.flag, size.variable, size.serving_default) == ("--size", None, 1000)


def test_pool_options_are_workerpools_keywords_in_its_order() -> None:
    import inspect

    from gpool import WorkerPool

    parameters = list(inspect.signature(WorkerPool).parameters.values())
    assert [option.name for option in POOL_OPTIONS] == [parameter.name for parameter in parameters]
    assert [option.default for option in POOL_OPTIONS] == [parameter.default for parameter in parameters]


def test_the_documented_variables_are_the_tables() -> None:
    doc = gpool.workers.__doc__ or ""
    documented = dict(re.findall(r"^- ``(GPOOL_\w+)``: (?:the server's )?``(\w+)``", doc, re.MULTILINE))
    declared = {option.variable: option.name for option in TABLE if option.variable}
    assert documented == declared
    # Nor any other GPOOL_* name anywhere in the text.
    assert set(re.findall(r"GPOOL_[A-Z_]+[A-Z]", doc)) == set(declared)


@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_what_run_gunicorn_writes_the_workers_read(option: Option) -> None:
    value, _bad = SAMPLES[option.name]
    environ = dict(line.split("=", 1) for line in environment_for({option.name: value}))
    assert set(environ) == {o.variable for o in TABLE if o.variable}
    if _is_pool_option(option):
        assert pool_options_from(environ, 1000)[option.name] == value
    else:
        assert server_options_from(environ) == {option.name: value}


def test_defaults_written_for_the_workers_read_back_as_the_defaults() -> None:
    environ = dict(line.split("=", 1) for line in environment_for({}))
    read = {**pool_options_from(environ, 1000), **server_options_from(environ)}
    for option in TABLE:
        if option.variable and option.default is not None:
            assert read.pop(option.name) == option.default
    assert read == {}  # None (off, never) is written empty: left to the default


def test_rules_across_variables_name_them_all() -> None:
    environ = {"GPOOL_SOFT_DEADLINE": "5", "GPOOL_HARD_DEADLINE": "2"}
    with pytest.raises(SettingError) as info:
        pool_options_from(environ, 10)
    assert str(info.value) == (
        "GPOOL_SOFT_DEADLINE='5', GPOOL_HARD_DEADLINE='2': soft_deadline must be less than hard_deadline (2.0), got 5.0"
    )


# -- reachable from all three ---------------------------------------------------------


@pytest.mark.entry_points
@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_gpool_serve_flag_reaches_the_pool(tmp_path: Path, option: Option) -> None:
    value, _bad = SAMPLES[option.name]
    with serving("module", *_flag_args(option, value), cwd=tmp_path) as server:
        line = server.wait_stderr("serving (pid:")
        assert _shown(option, value) in line, line
        if option.name == "overflow":
            assert server.banner["overflow"] == value
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit()[0] == 0


@pytest.mark.entry_points
@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_gpool_serve_workers_flag_reaches_each_workers_pool(tmp_path: Path, option: Option) -> None:
    value, _bad = SAMPLES[option.name]
    args = ("--workers", "2", *_flag_args(option, value))
    with serving("module", *args, cwd=tmp_path, new_session=True) as server:
        line = server.wait_stderr("Worker serving")
        assert _shown(option, value) in line, line
        # Wait for the other worker too: a signal reaching a worker still booting is lost.
        server.wait_stderr("Worker serving")
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit()[0] == 0


@pytest.mark.entry_points
@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_gpool_variable_reaches_the_gunicorn_workers_pool(tmp_path: Path, option: Option) -> None:
    value, _bad = SAMPLES[option.name]
    assert option.variable is not None
    with gunicorn(tmp_path, GPOOL_WORKER, env={option.variable: option.as_text(value)}) as master:
        master.wait_for_log("Worker serving")
        line = next(line for line in master.log().splitlines() if "Worker serving" in line)
        assert _shown(option, value) in line, line
        master.proc.send_signal(signal.SIGTERM)
        assert master.exit_status() == 0


# -- refused by all three -------------------------------------------------------------


@pytest.mark.entry_points
@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("option", [o for o in EVERYWHERE if not isinstance(o.default, bool)], ids=_ids)
def test_gpool_serve_refuses_a_bad_flag_value(tmp_path: Path, option: Option, workers: str) -> None:
    _value, bad = SAMPLES[option.name]
    assert bad is not None and option.flag is not None
    line = fails("module", "--workers", workers, option.flag, bad, cwd=tmp_path)
    if not _parses(option, bad):
        # argparse's own words for text that is no number; the flag and value named.
        assert line.startswith(f"gpool serve: error: argument {option.flag}: invalid"), line
        assert repr(bad) in line
    else:
        expected = _refusal(option, bad).replace(option.name, option.flag, 1)
        assert line == f"gpool serve: error: {expected}{HINT}"


@pytest.mark.entry_points
@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_gunicorn_refuses_a_bad_variable_value(tmp_path: Path, option: Option) -> None:
    _value, bad = SAMPLES[option.name]
    assert bad is not None and option.variable is not None
    with gunicorn(tmp_path, GPOOL_WORKER, "--workers=2", env={option.variable: bad}) as master:
        assert master.exit_status() == WORKER_BOOT_ERROR
        log = master.log()
    assert f"{option.variable}={bad!r}: {_refusal(option, bad)}" in log, log
    assert "Traceback" not in log
    assert sum(option.variable in line for line in log.splitlines()) == 1, log


@pytest.mark.parametrize("option", EVERYWHERE, ids=_ids)
def test_run_gunicorn_refuses_a_bad_value(option: Option) -> None:
    from gpool._cli.gunicorn_app import run_gunicorn

    _value, bad = SAMPLES[option.name]
    assert bad is not None and option.parse is not None
    try:
        value = option.parse(bad)
    except ValueError:
        value = bad  # the text itself, which no check takes for a number or a bool
    with pytest.raises((TypeError, ValueError)) as info:
        run_gunicorn(_never_loaded, bind="127.0.0.1:1", workers=2, log_level="info", **{option.name: value})
    assert str(info.value).startswith(f"{option.name} must ")


def _never_loaded() -> Any:
    raise AssertionError("the app was loaded")
