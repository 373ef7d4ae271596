"""Turning raw runs into summaries, tables for the terminal, and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, Iterable, Sequence

from .stats import summarize
from .strategies import label

__all__ = ["add_summaries", "format_report", "write_json"]

# Per scenario kind: (summary key, the run field it summarises).
_CHURN_METRICS = (
    ("rps", "rps"),
    ("p50_ms", "p50_ms"),
    ("p99_ms", "p99_ms"),
    ("cpu_us", "server_cpu_us_per_request"),
    ("user_us", "server_user_us_per_request"),
    ("sys_us", "server_sys_us_per_request"),
    ("req_per_cpu_s", "requests_per_cpu_s"),
)
_MEMORY_METRICS = (
    ("rss_mb_start", "rss_mb_start"),
    ("rss_mb_held", "rss_mb_held"),
    ("rss_mb_after", "rss_mb_after"),
    ("rss_mb_trimmed", "rss_mb_trimmed"),
    ("greenlets_held", "greenlets_held"),
    ("greenlets_after", "greenlets_after"),
)


def _column(runs: dict[str, list[dict[str, Any]]], field: str) -> dict[str, list[float]]:
    return {name: [float(run[field]) for run in rs if not math.isnan(float(run[field]))] for name, rs in runs.items()}


def add_summaries(scenarios: dict[str, Any]) -> None:
    """Give each scenario result a ``summary``: per metric, per strategy, the median,
    min, max and ratios against ``gevent.pool.Pool`` and the default spawn."""
    for name, result in scenarios.items():
        if "runs" in result and name != "memory":
            runs = result["runs"]
            result["summary"] = {key: summarize(_column(runs, field)) for key, field in _CHURN_METRICS}
        elif name == "memory":
            runs = result["runs"]
            summary = {key: summarize(_column(runs, field)) for key, field in _MEMORY_METRICS}
            left = {s: [float(r["greenlets_after"] - r["greenlets_start"]) for r in rs] for s, rs in runs.items()}
            summary["greenlets_left"] = summarize(left)
            result["summary"] = summary
        elif name == "dispatch":
            result["summary"] = {
                "us_per_task": summarize(result["us_per_task"]),
                "noblock_us_per_task": summarize(result["noblock_us_per_task"]),
            }


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _noise(runs: dict[str, list[dict[str, Any]]]) -> str:
    """How busy the two CPUs were with other work during the runs (median, worst)."""
    parts = []
    for key, what in (("other_load_server_cpu", "server CPU"), ("other_load_client_cpu", "load CPU")):
        values = [run[key] for rs in runs.values() for run in rs if key in run]
        if values:
            parts.append(f"{what} {statistics.median(values):.0%} (worst {max(values):.0%})")
    if not parts:
        return ""
    repeated = sum(run.get("attempts", 1) - 1 for rs in runs.values() for run in rs)
    noisy = sum(bool(run.get("noisy")) for rs in runs.values() for run in rs)
    return f"other load during the runs: {', '.join(parts)}; runs repeated {repeated}, kept noisy {noisy}"


def _share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _churn_lines(name: str, result: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    s = result["summary"]
    names = result.get("labels", {})
    # The gunicorn scenarios' "pool" is gevent's own worker class: their anchor.
    ref = "anchor" if result.get("reference") == "anchor" else "Pool"
    lines = [
        f"{name}: {result['title']}",
        f"  load: {result['load']}; {settings['rounds']} rounds x {settings['duration']:g} s; medians",
    ]
    noise = _noise(result["runs"])
    if noise:
        lines.append(f"  {noise}")
    with_floor = "floor" in s["rps"]
    leaks = {
        st: sorted({bool(run["state_leaks"]) for run in rs})
        for st, rs in result["runs"].items()
        if rs and "state_leaks" in rs[0]
    }
    rows = []
    for strategy, row in s["rps"].items():
        cells = [
            names.get(strategy) or label(strategy),
            _num(row["median"]),
            _num(row["min"]),
            _num(row["max"]),
            _ratio(row.get("vs_pool")),
        ]
        if ref == "Pool":
            cells.append(_ratio(row.get("vs_default")))
        cells += [
            _ratio(row.get("paired_vs_pool")),
            _num(s["p50_ms"][strategy]["median"], 2),
            _num(s["p99_ms"][strategy]["median"], 2),
            _num(s["cpu_us"][strategy]["median"], 1),
            _num(s["user_us"][strategy]["median"], 1),
            _num(s["sys_us"][strategy]["median"], 1),
            _ratio(s["req_per_cpu_s"][strategy].get("vs_pool")),
        ]
        if with_floor:
            # A share of nothing says nothing: only where the floor beat Pool at all.
            gained = s["rps"]["floor"].get("vs_pool", math.nan) > 1.0
            cells += [_ratio(row.get("vs_floor")), _share(row.get("floor_gain_share")) if gained else "-"]
        if leaks:
            cells.append("/".join("yes" if x else "no" for x in leaks.get(strategy, [])) or "-")
        rows.append(cells)
    header = ["strategy", "req/s", "min", "max", f"vs {ref}"] + (["vs default"] if ref == "Pool" else [])
    header += [f"paired/{ref}", "p50 ms", "p99 ms", "CPU us/req", "user", "sys", f"per CPU vs {ref}"]
    if with_floor:
        header += ["vs floor", "floor's gain"]
    if leaks:
        header.append("leak")
    out = lines + ["  " + line for line in _table(header, rows)]
    if with_floor:
        out.append(
            "  floor's gain: the share of the floor's req/s gain over Pool this strategy takes:"
            " (x - Pool) / (floor - Pool)"
        )
    if leaks:
        out.append("  leak: whether a second request on one keep-alive connection saw the first one's ContextVar/local")
    return out


def _dispatch_lines(result: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    s = result["summary"]
    lines = [f"dispatch: {result['title']}", f"  {settings['dispatch_rounds']} rounds; medians (lower is better)"]
    rows = []
    for strategy, row in s["us_per_task"].items():
        nb = s["noblock_us_per_task"][strategy]
        rows.append(
            [
                label(strategy),
                _num(row["median"], 2),
                _num(row["min"], 2),
                _num(row["max"], 2),
                _ratio(row.get("vs_pool")),
                _ratio(row.get("vs_default")),
                _ratio(row.get("paired_vs_pool")),
                _num(nb["median"], 2),
                _ratio(nb.get("vs_pool")),
            ]
        )
    header = ["strategy", "us/task", "min", "max", "vs Pool", "vs default", "paired/Pool", "no-block us", "vs Pool"]
    return lines + ["  " + line for line in _table(header, rows)]


def _memory_lines(result: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    s = result["summary"]
    lines = [
        f"memory: {result['title']}",
        f"  {settings['memory_rounds']} round(s); medians; RSS in MB ('trimmed': after malloc_trim, what is live)",
    ]
    rows = []
    for strategy, row in s["rss_mb_held"].items():
        after = s["rss_mb_after"][strategy]
        rows.append(
            [
                label(strategy),
                _num(s["rss_mb_start"][strategy]["median"], 1),
                _num(row["median"], 1),
                _ratio(row.get("vs_pool")),
                _num(after["median"], 1),
                _ratio(after.get("vs_pool")),
                _num(s["rss_mb_trimmed"][strategy]["median"], 1),
                _num(s["greenlets_held"][strategy]["median"]),
                _num(s["greenlets_after"][strategy]["median"]),
            ]
        )
    header = ["strategy", "RSS start", "RSS held", "vs Pool", "RSS after", "vs Pool", "trimmed", "greenlets held"]
    header.append("after")
    return lines + ["  " + line for line in _table(header, rows)]


def _latency_lines(scenarios: dict[str, Any]) -> list[str]:
    rows = []
    for name in ("tcp-churn", "wsgi-churn"):
        if name not in scenarios:
            continue
        s = scenarios[name]["summary"]
        for strategy, p50 in s["p50_ms"].items():
            p99 = s["p99_ms"][strategy]
            rows.append(
                [
                    name,
                    label(strategy),
                    _num(p50["median"], 2),
                    _ratio(p50.get("vs_pool")),
                    _num(p99["median"], 2),
                    _ratio(p99.get("vs_pool")),
                ]
            )
    if not rows:
        return []
    lines = ["latency under churn: per-request latency percentiles, medians over the churn rounds (lower is better)"]
    header = ["scenario", "strategy", "p50 ms", "vs Pool", "p99 ms", "vs Pool"]
    return lines + ["  " + line for line in _table(header, rows)]


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    if not targets:
        return []
    rows = []
    for t in targets:
        value = f"{t['value']:.2f}{t['unit']}" if t["unit"] else f"{t['value']:g}"
        text = f"{t['target']}: {t['worst']}" if "worst" in t else t["target"]
        rows.append([text, value, t["goal"], "met" if t["met"] else "MISSED"])
    lines = [
        "targets: WorkerPool(10000) (gunicorn: gpool's worker class), isolation on, ratio of medians"
        " (informational; noisy machines vary)"
    ]
    return lines + ["  " + line for line in _table(["target", "measured", "goal", ""], rows)]


def format_report(report: dict[str, Any]) -> str:
    """Every table of a finished run, as text for stdout."""
    m = report["machine"]
    settings = report["settings"]
    lines = [
        f"gpool bench: {m.get('cpu_model', '?')}, {m.get('nproc')} CPUs; Python {m.get('python')}, "
        f"gevent {m.get('gevent', '?')}, greenlet {m.get('greenlet', '?')}, gpool {m.get('gpool', '?')}",
        f"pinning: {report['pinning']}; load: {report['load']}",
    ]
    scenarios = report["scenarios"]
    for name, result in scenarios.items():
        lines.append("")
        if name == "dispatch":
            lines += _dispatch_lines(result, settings)
        elif name == "memory":
            lines += _memory_lines(result, settings)
        else:
            lines += _churn_lines(name, result, settings)
    latency = _latency_lines(scenarios)
    if latency:
        lines += ["", *latency]
    targets = _target_lines(report.get("targets", []))
    if targets:
        lines += ["", *targets]
    if report.get("problems"):
        lines += ["", "problems:"] + [f"  {p}" for p in report["problems"]]
    lines += ["", f"elapsed {report['elapsed_s']:.0f} s"]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """*value* with every NaN replaced by None, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(_finite(report), f, indent=1)
        f.write("\n")
