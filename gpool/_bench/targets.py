"""The speed claims the benchmark checks, as ratios of WorkerPool (isolation on) to
gevent's strategies within one run (in the gunicorn scenarios: gpool's worker class to
gevent's, the "pool" strategy there). Informational: nothing fails when one is missed,
because one noisy run proves little either way."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ANY_SCENARIO", "TARGETS", "Target", "evaluate"]

# A target's scenario that stands for every scenario with the metric: the worst counts.
ANY_SCENARIO = "*"


@dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    metric: str  # a key of the scenario's summary
    field: str  # which figure of the summary row: vs_pool, vs_default, median, ...; "|"-separated: the worst
    goal: float
    at_most: bool  # True: the figure must be <= goal; False: >= goal
    unit: str = "x"

    def check(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = operator.le if self.at_most else operator.ge
        return not math.isnan(value) and compare(value, self.goal)

    def goal_text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.goal:g}{self.unit}"


TARGETS = (
    Target("raw-TCP churn req/s vs Pool", "tcp-churn", "rps", "vs_pool", 1.25, False),
    Target("raw-TCP churn req/s vs default spawn", "tcp-churn", "rps", "vs_default", 1.2, False),
    # The same claims per second of the server's own CPU: a cross-check that noise on a
    # shared machine barely moves.
    Target("raw-TCP churn req per server CPU-second vs Pool", "tcp-churn", "req_per_cpu_s", "vs_pool", 1.25, False),
    Target("pywsgi churn req/s vs Pool", "wsgi-churn", "rps", "vs_pool", 1.12, False),
    Target("pywsgi churn req per server CPU-second vs Pool", "wsgi-churn", "req_per_cpu_s", "vs_pool", 1.12, False),
    Target("pywsgi keep-alive req/s vs Pool", "wsgi-keepalive", "rps", "vs_pool", 0.98, False),
    Target("dispatch us/task vs Pool", "dispatch", "us_per_task", "vs_pool", 0.25, True),
    Target("RSS holding the connections vs Pool", "memory", "rss_mb_held", "vs_pool", 1.0, True),
    Target("greenlets left after max_idle, beyond the start", "memory", "greenlets_left", "median", 0, True, ""),
    Target("RSS after max_idle vs Pool's", "memory", "rss_mb_after", "vs_pool", 1.0, True),
    # What is still live, once malloc has handed back the memory it keeps for reuse.
    Target("RSS after max_idle and malloc_trim vs Pool's", "memory", "rss_mb_trimmed", "vs_pool", 1.0, True),
    Target("raw-TCP churn p99 latency vs Pool", "tcp-churn", "p99_ms", "vs_pool", 1.0, True),
    Target("pywsgi churn p99 latency vs Pool", "wsgi-churn", "p99_ms", "vs_pool", 1.0, True),
    # How close WorkerPool comes to the floor: its design with no bookkeeping at all.
    Target("raw-TCP churn req/s vs the floor", "tcp-churn", "rps", "vs_floor", 0.97, False),
    Target("GPoolWorker keep-alive req/s vs -k gevent", "gunicorn-gevent-keepalive", "rps", "vs_pool", 1.0, False),
    Target("GPoolWorker churn req/s vs -k gevent", "gunicorn-gevent-churn", "rps", "vs_pool", 1.05, False),
    Target(
        "GPoolPyWSGIWorker keep-alive req/s vs -k gevent_pywsgi",
        "gunicorn-pywsgi-keepalive",
        "rps",
        "vs_pool",
        1.0,
        False,
    ),
    Target("GPoolPyWSGIWorker churn req/s vs -k gevent_pywsgi", "gunicorn-pywsgi-churn", "rps", "vs_pool", 1.08, False),
    # Anchors: gevent.pool.Pool and the default spawn, and gevent's gunicorn workers.
    Target("no scenario's req/s below an anchor's (the worst)", ANY_SCENARIO, "rps", "vs_pool|vs_default", 0.98, False),
)


def _figure(target: Target, scenarios: dict[str, Any], strategy: str) -> tuple[float, str] | None:
    """The figure *target* judges, and where the worst of several was found."""
    names = list(scenarios) if target.scenario == ANY_SCENARIO else [target.scenario]
    found: list[tuple[float, str]] = []
    for name in names:
        row = scenarios.get(name, {}).get("summary", {}).get(target.metric, {}).get(strategy)
        if row is None:
            continue
        for field in target.field.split("|"):
            if field in row and not math.isnan(float(row[field])):
                found.append((float(row[field]), f"{name} {field}"))
    if not found:
        return None
    return max(found) if target.at_most else min(found)


def evaluate(scenarios: dict[str, Any], strategy: str = "gpool") -> list[dict[str, Any]]:
    """Each target whose scenario ran, with the measured figure and whether it is met."""
    out = []
    for target in TARGETS:
        figure = _figure(target, scenarios, strategy)
        if figure is None:
            continue
        value, where = figure
        out.append(
            {
                "target": target.text,
                "scenario": where.split()[0] if target.scenario == ANY_SCENARIO else target.scenario,
                "strategy": strategy,
                "value": value,
                "goal": target.goal_text(),
                "met": target.check(value),
                "unit": target.unit,
                **({"worst": where} if target.scenario == ANY_SCENARIO else {}),
            }
        )
    return out
