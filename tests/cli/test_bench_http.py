"""``benchmarks/http_servers.py`` (gpool.wsgi.WSGIServer against gevent's): its figures
from made-up runs, and one tiny real run.

The real run needs wrk (and checks what comes out, not how fast anything is).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "http_servers.py"


def load_script() -> ModuleType:
    if "http_servers" in sys.modules:
        return sys.modules["http_servers"]
    spec = importlib.util.spec_from_file_location("http_servers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_servers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def made_up_run(round_no: int, role: str, rps: float, cpu_us: float, scenario: str = "keepalive") -> dict[str, Any]:
    return {
        "round": round_no,
        "group": "wsgiserver",
        "role": role,
        "server": role,
        "scenario": scenario,
        "requests": 1000,
        "elapsed_s": 1.0,
        "rps": rps,
        "cpu_user_s": cpu_us * 0.8e-3,
        "cpu_sys_s": cpu_us * 0.2e-3,
        "cpu_us_per_req": cpu_us,
        "user_us_per_req": cpu_us * 0.8,
        "sys_us_per_req": cpu_us * 0.2,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "socket_errors": {},
        "eof_read_errors": 1000 if scenario == "churn" else 0,
        "says_connection_close": False,
        "non_2xx": 0,
        "state_leaks": role != "gpool",
        "other_load": 0.01,
    }


def test_summary_gives_medians_ratios_and_the_isolation_cost() -> None:
    hs = load_script()
    runs = [
        made_up_run(0, "anchor", 100.0, 200.0),
        made_up_run(1, "anchor", 200.0, 100.0),
        made_up_run(2, "anchor", 300.0, 100.0),
        made_up_run(0, "gpool", 110.0, 190.0),
        made_up_run(1, "gpool", 180.0, 110.0),
        made_up_run(2, "gpool", 330.0, 100.0),
        made_up_run(0, "gpool-noiso", 120.0, 180.0),
        made_up_run(1, "gpool-noiso", 200.0, 100.0),
        made_up_run(2, "gpool-noiso", 330.0, 95.0),
    ]
    summary, isolation = hs.summarize(runs)
    gpool = summary["keepalive"]["wsgiserver"]["gpool"]
    assert gpool["rps"] == 180.0
    assert gpool["rps_vs_anchor"] == pytest.approx(0.9)
    # Round by round: 1.1, 0.9, 1.1.
    assert gpool["rps_paired_vs_anchor"] == pytest.approx(1.1)
    assert gpool["cpu_vs_anchor"] == pytest.approx(1.1)
    assert gpool["state_leaks"] == [False]
    assert "rps_vs_anchor" not in summary["keepalive"]["wsgiserver"]["anchor"]
    (cost,) = isolation
    assert cost["cost_us_per_req"] == pytest.approx(110.0 - 100.0)
    # Round by round: +10, +10, +5.
    assert cost["cost_us_paired"] == pytest.approx(10.0)
    assert cost["rps_on_vs_off"] == pytest.approx(0.9)


def test_groups_alternate_their_order_by_round_and_scenario() -> None:
    hs = load_script()
    variants = hs.GROUPS["wsgiserver"]
    assert hs.orders(variants, 0, 0) == list(variants)
    assert hs.orders(variants, 1, 0) == list(reversed(variants))
    assert hs.orders(variants, 0, 1) == list(reversed(variants))


def test_rejects_bad_options() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--rounds must be >= 1" in done.stderr


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_a_tiny_run_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    argv = [sys.executable, str(SCRIPT), "--rounds", "1", "--duration", "1", "--warmup", "0"]
    argv += ["--connections", "2", "--app", "bare", "--scenario", "keepalive", "--json", str(out)]
    argv += ["--group", "wsgiserver"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keep-alive" in done.stdout and "versions: Python" in done.stdout
    assert "gpool.wsgi.WSGIServer + WorkerPool(1000)" in done.stdout
    report = json.loads(out.read_text())
    assert {"machine", "config", "summary", "isolation", "warnings", "runs"} <= set(report)
    for name in ("cpu_model", "nproc", "python", "gevent", "flask"):
        assert report["machine"][name]
    groups = report["summary"]["keepalive"]
    assert {"anchor", "gpool", "gpool-noiso"} <= set(groups["wsgiserver"])
    for roles in groups.values():
        for row in roles.values():
            assert row["rps"] > 0 and row["cpu_us_per_req"] > 0
            assert row["socket_errors"] == 0 and row["non_2xx"] == 0
    assert all(not math.isnan(r["user_us_per_req"]) for r in report["runs"])
    assert any(r["group"] == "wsgiserver" for r in report["isolation"])
    # Isolation per request: on, no state crosses; off, it does (the probe works).
    assert groups["wsgiserver"]["gpool-noiso"]["state_leaks"] == [True]
