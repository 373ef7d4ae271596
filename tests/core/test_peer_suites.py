"""gevent's own server test suites, run against ``gpool.WorkerPool`` ("peer suites").

Each suite runs in a subprocess through ``tests/peer/run_peer.py`` (``test__pywsgi``
monkey-patches the whole process when imported), which prints one ``PEER-SUMMARY``
JSON line. These tests check that line: every test passed, as many ran as gevent
ships, and the servers really ran their connections on WorkerPools.

Run just these with ``pytest -m peer``; leave them out with ``pytest -m "not peer"``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "peer" / "run_peer.py"
SUMMARY_PREFIX = "PEER-SUMMARY "

# Wall-clock limit per suite. Each takes a few seconds; the runner dumps every stack
# and exits by itself well before this (--hang-timeout) if something hangs.
TIMEOUT = 300
HANG_TIMEOUT = 240

# Tests each suite holds and runs: (loaded, executed, i.e. not skipped). The same for
# gevent 24.11.1, 25.9.1 and 26.9.0 on CPython 3.9-3.13; a gevent that ships fewer
# tests fails here, so a shrinking suite cannot pass unnoticed. (unittest's own
# testsRun is not used: from Python 3.12 it leaves skipped tests out.)
EXPECTED_COUNTS = {
    "server": (12, 12),  # test__server.TestPoolSpawn
    "server_pywsgi": (12, 12),  # test__server_pywsgi.TestPoolSpawn
    "pywsgi": (120, 113),  # test__pywsgi, every class
    "pywsgi_gpool_server": (120, 113),  # the same, on gpool.wsgi.WSGIServer
}

# The only skips these suites may have on Linux. gevent decorates
# CommonTestMixin.test_006_reject_long_urls with @unittest.skip("Not sure"), and seven
# classes inherit it; its body cannot pass on Python 3 anyway (it splits the bytes
# status line with a str separator), and Test414, which runs, covers the same 414
# answer to an overlong request line. Every other skip in
# these modules depends on the platform (Windows, AppVeyor, PyPy) or on coverage being
# on (EXPECT_POOR_TIMER_RESOLUTION, which would skip test_pool_full itself): _run scrubs
# the coverage variables so that none of those apply.
ALLOWED_SKIPS = {"test_006_reject_long_urls": "Not sure"}

# Variables that change what gevent's suites run: coverage turns on
# EXPECT_POOR_TIMER_RESOLUTION (skipping test_pool_full), leak checks repeat every test
# several times. Dropped from the subprocess's environment.
_SCRUBBED_ENV = ("COVERAGE_PROCESS_START", "GEVENTTEST_COVERAGE", "GEVENTTEST_LEAKCHECK")

# What gevent's own runner (gevent.testing.testrunner._setup_environ) sets for each test
# process: dev mode, fault handler, warnings shown but not fatal. The runner also keeps
# deprecation and resource warnings from ever being raised, whatever the caller set.
_GEVENT_TEST_ENV = {"PYTHONDEVMODE": "1", "PYTHONFAULTHANDLER": "1", "PYTHONWARNINGS": "default"}


@functools.cache
def _run(suite: str) -> tuple[int, str, str, Any]:
    """Run one suite once per session; (exit status, stdout, stderr, summary or None)."""
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    env.update(_GEVENT_TEST_ENV, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [sys.executable, str(RUNNER), suite, "--hang-timeout", str(HANG_TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            cwd=str(RUNNER.parent),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"peer suite {suite!r} still running after {TIMEOUT}s\n{_tail(exc.stderr)}")
    summary = None
    for line in proc.stdout.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
    return proc.returncode, proc.stdout, proc.stderr, summary


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _summary(suite: str) -> dict[str, Any]:
    code, stdout, stderr, summary = _run(suite)
    if summary is None:
        pytest.fail(f"peer suite {suite!r} printed no summary (exit {code})\n{_tail(stdout)}\n{_tail(stderr)}")
    return dict(summary)


@pytest.mark.peer
@pytest.mark.parametrize("suite", sorted(EXPECTED_COUNTS))
def test_gevent_suite_passes_on_workerpool(suite: str) -> None:
    code, _stdout, stderr, _ = _run(suite)
    summary = _summary(suite)
    report = f"{json.dumps(summary, indent=1, sort_keys=True)}\n--- runner stderr ---\n{_tail(stderr)}"

    assert summary["pool"] == "gpool.WorkerPool", report
    assert summary["failures"] == 0, report
    assert summary["errors"] == 0, report
    assert summary["unexpected_successes"] == 0, report
    assert code == 0, report

    expected_loaded, expected_executed = EXPECTED_COUNTS[suite]
    assert summary["tests_loaded"] >= expected_loaded, report
    assert summary["tests_executed"] >= expected_executed, report
    # Every test gevent's module defines was either run or skipped (with a reason below).
    assert summary["tests_executed"] + summary["skipped"] == summary["tests_loaded"], report
    for test_id, reason in summary["skipped_tests"]:
        method = test_id.rsplit(".", 1)[-1]
        assert ALLOWED_SKIPS.get(method) == reason, f"unexplained skip: {test_id}: {reason}\n{report}"

    # The pool really was used, by every server the suite built.
    assert summary["pools_created"] > 0, report
    assert summary["tasks_started"] > 0, report
    assert summary["servers"] > 0, report
    assert summary["servers_off_pool"] == 0, report


# Known limitation: spawn() in the hub switches into the worker from inside the server's
# accept callback; gevent's test harness (error_fatal) switches from a failing handler
# straight into the main greenlet, which closes the server while that callback is
# suspended, and gevent's accept loop then reads the closed server once
# (TestBody304/TestWrite304). Ordinary error reporting does not switch.
_READS_AFTER_CLOSE = pytest.mark.xfail(
    reason="known limitation: direct switch into the worker inside the accept callback (see above)",
    strict=False,
)


@pytest.mark.peer
@pytest.mark.parametrize(
    "suite",
    [
        "server",
        "server_pywsgi",
        pytest.param("pywsgi", marks=_READS_AFTER_CLOSE),
        pytest.param("pywsgi_gpool_server", marks=_READS_AFTER_CLOSE),
    ],
)
def test_accept_loop_never_reads_a_closed_server(suite: str) -> None:
    """gevent's own pool never leaves a server's accept loop running past close()."""
    summary = _summary(suite)
    assert summary["reads_after_close"] == 0, summary["reads_after_close_detail"]
