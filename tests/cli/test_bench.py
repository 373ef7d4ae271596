"""``gpool bench``: the figures it computes, its options, and tiny runs end to end.

The end-to-end tests check that every part answers, not how fast anything is. Those of
the gunicorn scenarios run once with each load generator (wrk where installed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from gpool._bench.command import settings_from
from gpool._bench.load import parse_wrk
from gpool._bench.scenarios import rotated
from gpool._bench.stats import latency_bucket, merge_histograms, paired_ratio, percentile_ms, summarize
from gpool._bench.targets import evaluate

HAVE_WRK = shutil.which("wrk") is not None


def test_summarize_gives_medians_and_ratios_against_pool_and_default() -> None:
    values = {"default": [8.0, 10.0, 12.0], "pool": [10.0, 20.0, 30.0], "gpool": [30.0, 25.0, 40.0]}
    s = summarize(values)
    assert s["gpool"]["median"] == 30.0
    assert (s["gpool"]["min"], s["gpool"]["max"]) == (25.0, 40.0)
    assert s["gpool"]["vs_pool"] == pytest.approx(1.5)
    assert s["gpool"]["vs_default"] == pytest.approx(3.0)
    assert s["pool"]["vs_pool"] == 1.0
    # Round by round: 3.0, 1.25, 1.333...; their median.
    assert s["gpool"]["paired_vs_pool"] == pytest.approx(4 / 3)


def test_ratios_are_left_out_without_their_reference() -> None:
    s = summarize({"gpool": [1.0, 2.0]})
    assert "vs_pool" not in s["gpool"] and "vs_default" not in s["gpool"]
    assert math.isnan(paired_ratio([1.0], [0.0]))


def test_latency_histogram_percentiles_are_within_a_bucket() -> None:
    # 1 ms x 98, 10 ms x 2, split over two generator processes.
    first = {latency_bucket(1000.0): 50}
    second = {latency_bucket(1000.0): 48, latency_bucket(10000.0): 2}
    hist = merge_histograms([first, second])
    assert sum(hist.values()) == 100
    assert percentile_ms(hist, 50) == pytest.approx(1.0, rel=0.01)
    assert percentile_ms(hist, 99) == pytest.approx(10.0, rel=0.01)
    assert math.isnan(percentile_ms({}, 50))


def test_rounds_rotate_the_order_of_strategies() -> None:
    names = ["a", "b", "c"]
    assert [rotated(names, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], names]


WRK_REPORT = """Running 5s test @ http://127.0.0.1:40000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.91ms  453.12us  12.02ms   93.10%
    Req/Sec    17.26k     1.01k   18.61k    82.00%
  Latency Distribution
     50%    2.85ms
     75%    2.99ms
     90%    3.21ms
     99%  812.00us
  85866 requests in 5.00s, 9.91MB read
  Socket errors: connect 0, read 12, write 0, timeout 0
Requests/sec:  17172.63
Transfer/sec:      1.98MB
"""


def test_wrk_report_is_read() -> None:
    figures = parse_wrk(WRK_REPORT)
    assert figures["requests"] == 85866
    assert figures["rps"] == pytest.approx(17172.63)
    assert figures["elapsed_s"] == pytest.approx(5.0)
    assert figures["errors"] == {"connect": 0, "read": 12, "write": 0, "timeout": 0}
    assert figures["non_2xx"] == 0
    assert figures["p50_ms"] == pytest.approx(2.85)
    assert figures["p99_ms"] == pytest.approx(0.812)


def test_targets_compare_the_isolated_worker_pool() -> None:
    scenarios = {
        "tcp-churn": {"summary": {"rps": summarize({"default": [100.0], "pool": [110.0], "gpool": [140.0]})}},
        "dispatch": {"summary": {"us_per_task": summarize({"pool": [30.0], "gpool": [9.0]})}},
    }
    results = {t["target"]: t for t in evaluate(scenarios)}
    assert results["raw-TCP churn req/s vs Pool"]["met"] is True  # 1.27x
    assert results["raw-TCP churn req/s vs default spawn"]["met"] is True  # 1.4x
    assert results["dispatch us/task vs Pool"]["met"] is False  # 0.3x
    assert "pywsgi churn req/s vs Pool" not in results  # not run


def test_the_floor_gives_its_ratio_and_the_share_of_its_gain() -> None:
    s = summarize({"pool": [100.0], "gpool": [130.0], "floor": [140.0]})
    assert s["gpool"]["vs_floor"] == pytest.approx(130 / 140)
    assert s["gpool"]["floor_gain_share"] == pytest.approx(0.75)  # 30 of the floor's 40
    assert s["floor"]["floor_gain_share"] == pytest.approx(1.0)
    assert math.isnan(summarize({"pool": [1.0], "gpool": [2.0], "floor": [1.0]})["gpool"]["floor_gain_share"])


def test_targets_judge_the_floor_the_gunicorn_workers_and_the_worst_anchor() -> None:
    scenarios = {
        "tcp-churn": {
            "summary": {"rps": summarize({"default": [90.0], "pool": [100.0], "gpool": [98.0], "floor": [99.0]})}
        },
        "gunicorn-gevent-churn": {"summary": {"rps": summarize({"pool": [100.0], "gpool": [104.0]})}},
        "gunicorn-pywsgi-keepalive": {"summary": {"rps": summarize({"pool": [100.0], "gpool": [97.0]})}},
    }
    results = {t["target"]: t for t in evaluate(scenarios)}
    assert results["raw-TCP churn req/s vs the floor"]["met"] is True  # 0.99x
    assert results["GPoolWorker churn req/s vs -k gevent"]["met"] is False  # 1.04x < 1.05x
    assert results["GPoolPyWSGIWorker keep-alive req/s vs -k gevent_pywsgi"]["met"] is False
    worst = results["no scenario's req/s below an anchor's (the worst)"]
    assert worst["value"] == pytest.approx(0.97) and worst["met"] is False
    assert worst["worst"] == "gunicorn-pywsgi-keepalive vs_pool"
    assert "GPoolWorker keep-alive req/s vs -k gevent" not in results  # not run


def _parse(*argv: str) -> object:
    from gpool._bench.command import configure
    from gpool._cli.main import _OneLineErrors

    parser = _OneLineErrors(prog="gpool bench")
    configure(parser)
    return parser.parse_args(list(argv))


def test_quick_changes_only_what_is_not_given() -> None:
    quick = settings_from(_parse("--quick", "--rounds", "4"))  # type: ignore[arg-type]
    assert (quick.rounds, quick.duration, quick.memory_connections) == (4, 1.0, 1000)
    full = settings_from(_parse("--scenario", "latency", "--strategy", "gpool", "--strategy", "pool"))  # type: ignore[arg-type]
    assert full.scenarios == ("tcp-churn", "latency")  # latency is measured during churn
    assert full.strategies == ("pool", "gpool")
    assert (full.rounds, full.memory_connections) == (5, 10000)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--rounds", "0"], "argument --rounds: must be greater than 0, got '0'"),
        (["--rounds", "1.5"], "argument --rounds: expected a whole number, got '1.5'"),
        (["--duration", "x"], "argument --duration: expected a number, got 'x'"),
        (["--warmup", "-1"], "argument --warmup: must not be negative, got '-1'"),
        (["--retries", "-1"], "argument --retries: must not be negative, got '-1'"),
        (["--server-cpu", "one"], "argument --server-cpu: expected a taskset CPU list such as 0, 0,2 or 1-3"),
        (["--client-cpu", "3-1"], "argument --client-cpu: expected a taskset CPU list such as 0, 0,2 or 1-3"),
        (["--scenario", "nope"], "argument --scenario: invalid choice"),
        (["--load", "ab"], "argument --load: invalid choice"),
        (["--alt", "/nonexistent"], "argument --alt: no gpool package in '/nonexistent'"),
    ],
)
def test_bad_options_exit_with_status_2(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from gpool._cli.main import main as gpool_main

    with pytest.raises(SystemExit) as exc:
        gpool_main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpool bench: error:") and len(err.strip().splitlines()) == 1
    assert said in err, err


@pytest.mark.parametrize(
    ("cpus", "ids"), [("0", {0}), ("1", {1}), ("0,2", {0, 2}), ("1-3", {1, 2, 3}), ("0,2-3", {0, 2, 3})]
)
def test_cpu_lists_read_as_taskset_does(cpus: str, ids: set[int]) -> None:
    from gpool._bench.machine import cpu_ids
    from gpool._bench.procs import Pinning

    assert cpu_ids(cpus) == ids
    pinning = Pinning("0", cpus)
    assert pinning.client_cpus == (len(ids) if pinning.enabled else 1)


def test_a_tiny_run_end_to_end_with_the_builtin_load_generator(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        *("--load", "builtin", "--strategy", "pool", "--strategy", "gpool", "--strategy", "floor"),
        *("--scenario", "tcp-churn", "--scenario", "wsgi-keepalive", "--scenario", "dispatch", "--scenario", "memory"),
        *("--rounds", "1", "--duration", "0.3", "--warmup", "0", "--connections", "8", "--retries", "0"),
        *("--dispatch-rounds", "1", "--tasks", "100"),
        *("--memory-connections", "50", "--memory-rounds", "1", "--max-idle", "0.1"),
        *("--json", str(out), "--png", str(tmp_path / "bench.png")),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "gpool", "bench", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "raw-TCP churn req/s vs Pool" in done.stdout  # the targets table
    assert f"wrote {out}\n" in done.stderr  # where it went, as an absolute path
    report = json.loads(out.read_text())
    for name in ("tcp-churn", "wsgi-keepalive"):
        runs = report["scenarios"][name]["runs"]
        assert set(runs) == {"pool", "gpool", "floor"}
        assert all(
            run["requests"] > 0 and run["server_handled"] >= run["requests"] for rs in runs.values() for run in rs
        )
        gpool = report["scenarios"][name]["summary"]["rps"]["gpool"]
        assert gpool["vs_floor"] > 0 and "floor_gain_share" in gpool
    assert "floor's gain" in done.stdout
    dispatch = report["scenarios"]["dispatch"]["summary"]["us_per_task"]
    assert set(dispatch) == {"pool", "gpool", "floor", "handoff"}
    assert set(report["scenarios"]["memory"]["runs"]) == {"pool", "gpool"}  # the floor never culls
    memory = report["scenarios"]["memory"]["runs"]["gpool"][0]
    assert memory["connections"] == 50
    assert memory["greenlets_held"] >= memory["greenlets_start"] + 50
    assert memory["greenlets_after"] == memory["greenlets_start"]  # culled
    assert memory["pool_after"]["workers"] == 0
    assert report["problems"] == []


def test_a_run_without_json_or_png_writes_nothing(tmp_path: Path) -> None:
    argv = ["--load", "builtin", "--scenario", "dispatch", "--strategy", "gpool", "--dispatch-rounds", "1"]
    argv += ["--tasks", "100", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "gpool", "bench", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "dispatch" in done.stdout  # the report is printed all the same
    assert list(tmp_path.iterdir()) == []
    assert (
        done.stderr.splitlines()[-1] == "no files written (--json PATH and --png PATH keep the figures and the chart)"
    )


def _our_processes(mark: str) -> list[int]:
    """Processes still running with *mark* in their environment (children of one run)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if f"BENCH_TEST_RUN={mark}".encode() in environ.split(b"\0"):
                found.append(int(entry))
    return found


def _bench(
    tmp_path: Path, *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``gpool bench ARGV --json``; the finished process and the report. Checks that no
    child of the run (a gunicorn master or worker, a server, a load generator) is left."""
    out = tmp_path / "bench.json"
    mark = uuid.uuid4().hex
    env = {**(env or os.environ), "BENCH_TEST_RUN": mark}
    done = subprocess.run(
        [sys.executable, "-m", "gpool", "bench", *argv, "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert _our_processes(mark) == [], "children of the run are still running"
    assert done.returncode == 0, done.stderr + done.stdout
    return done, json.loads(out.read_text())


_TINY = ("--rounds", "1", "--duration", "0.3", "--warmup", "0", "--connections", "4", "--retries", "0")


@pytest.mark.bench_e2e
@pytest.mark.parametrize(
    ("load", "scenarios"),
    [
        pytest.param("wrk", ("gunicorn-gevent-churn", "gunicorn-pywsgi-keepalive"), marks=pytest.mark.skipif(
            not HAVE_WRK, reason="needs wrk")),
        ("builtin", ("gunicorn-gevent-keepalive", "gunicorn-pywsgi-churn")),
    ],
)  # fmt: skip
def test_the_gunicorn_scenarios_end_to_end(tmp_path: Path, load: str, scenarios: tuple[str, ...]) -> None:
    argv = ["--load", load, "--app", "bare", *_TINY]
    for name in scenarios:
        argv += ["--scenario", name]
    # default and floor do not apply to gunicorn: they are left out, not an error.
    for strategy in ("default", "pool", "gpool", "gpool-noiso", "floor"):
        argv += ["--strategy", strategy]
    done, report = _bench(tmp_path, *argv)
    assert report["load"] == load and report["problems"] == [] and report["skipped"] == {}
    assert "gunicorn -k gpool.workers.GPoolWorker" in done.stdout or "GPoolPyWSGIWorker" in done.stdout
    for name in scenarios:
        result = report["scenarios"][name]
        assert set(result["runs"]) == {"pool", "gpool", "gpool-noiso"}
        assert result["reference"] == "anchor" and "GPOOL_ISOLATE=0" in result["labels"]["gpool-noiso"]
        for strategy, (run,) in result["runs"].items():
            assert run["rps"] > 0 and run["requests"] > 0 and run["non_2xx"] == 0
            assert run["server_cpu_us_per_request"] > 0
            assert run["server_user_us_per_request"] >= 0 and run["server_sys_us_per_request"] >= 0
            assert run["server_cpu_us_per_request"] == pytest.approx(
                run["server_user_us_per_request"] + run["server_sys_us_per_request"]
            )
            # Per request isolation: only gpool's worker class with it on keeps state apart.
            assert run["state_leaks"] is (strategy != "gpool"), strategy
        summary = result["summary"]
        assert {"user_us", "sys_us", "cpu_us", "p50_ms", "p99_ms"} <= set(summary)
        assert summary["rps"]["pool"]["vs_pool"] == 1.0
        assert summary["rps"]["gpool"]["vs_pool"] > 0 and summary["rps"]["gpool-noiso"]["paired_vs_pool"] > 0
    judged = {t["scenario"] for t in report["targets"]}
    assert set(scenarios) <= judged


def _shadowed(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which importing *module* fails, as where it is not installed."""
    shadow = tmp_path / "shadow" / module
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}


@pytest.mark.parametrize(("app", "missing"), [("flask", "flask"), ("bare", "gunicorn")])
def test_the_gunicorn_scenarios_are_skipped_with_what_to_install(tmp_path: Path, app: str, missing: str) -> None:
    argv = ["--load", "builtin", "--app", app, "--scenario", "gunicorn-gevent-churn", "--scenario", "dispatch"]
    argv += ["--strategy", "gpool", "--dispatch-rounds", "1", "--tasks", "100", *_TINY]
    done, report = _bench(tmp_path, *argv, env=_shadowed(tmp_path, missing))
    line = f"note: skipping the gunicorn scenarios: {missing} not importable (pip install 'gpool[bench]')"
    assert line in done.stderr.splitlines()
    assert report["skipped"] == {"gunicorn-gevent-churn": f"{missing} not importable (pip install 'gpool[bench]')"}
    assert set(report["scenarios"]) == {"dispatch"}  # the rest still ran


# -- the harness apart: imported only when `gpool bench` runs ----------------------------


def _gpool(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["--version"]])
def test_other_commands_never_import_the_harness(argv: list[str]) -> None:
    done = _gpool(
        "import sys\n"
        "from gpool._cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('harness imported:', [m for m in sys.modules if m.startswith('gpool._bench.')])\n"
    )
    assert done.returncode == 0, done.stderr
    assert "harness imported: []" in done.stdout
    if argv == ["--help"]:
        assert "bench" in done.stdout and "compare gpool" in done.stdout


def test_without_the_resource_module_serve_works_and_bench_says_why() -> None:
    prelude = "import sys\nsys.modules['resource'] = None  # as on Windows\nfrom gpool._cli.main import main\n"
    serve = _gpool(
        prelude + "try:\n    main(['serve', '--help'])\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
    )
    assert serve.returncode == 0 and "exit 0" in serve.stdout, serve.stderr
    assert "--max-idle" in serve.stdout
    bench = _gpool(prelude + "print('status', main(['bench', '--quick']))\n")
    assert bench.returncode == 0, bench.stderr
    assert "status 2" in bench.stdout
    assert bench.stderr.strip().splitlines() == [
        "gpool bench: error: the benchmark harness needs a Unix system (the resource module)"
    ]


def test_bench_help_and_usage_errors_come_from_the_harness() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "gpool", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "usage: gpool bench" in helped.stdout and "--rounds" in helped.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "gpool", "bench", "--rounds", "0"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpool bench: error:") and "--rounds" in lines[0], lines
