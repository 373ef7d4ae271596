"""The PNG chart: one panel per scenario, a bar per strategy (the median, with the
range of the rounds as a whisker) labelled with its ratio to ``gevent.pool.Pool``.

Needs matplotlib (``pip install 'gpool[bench]'``); :func:`write_chart` says so
(it returns why no chart was drawn) when it is missing.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["write_chart"]

# (scenario, metric, panel title, y label, True when higher is better)
_PANELS = (
    ("tcp-churn", "rps", "raw-TCP churn (StreamServer)", "requests/s", True),
    ("wsgi-churn", "rps", "pywsgi churn", "requests/s", True),
    ("wsgi-keepalive", "rps", "pywsgi keep-alive", "requests/s", True),
    ("dispatch", "us_per_task", "dispatch from the hub", "us per task", False),
    ("memory", "rss_mb_held", "RSS holding the connections", "MB", False),
    ("tcp-churn", "p99_ms", "p99 latency, raw-TCP churn", "ms", False),
    ("gunicorn-gevent-churn", "rps", "gunicorn -k gevent vs GPoolWorker, churn", "requests/s", True),
    ("gunicorn-gevent-keepalive", "rps", "gunicorn -k gevent vs GPoolWorker, keep-alive", "requests/s", True),
    ("gunicorn-pywsgi-churn", "rps", "gunicorn -k gevent_pywsgi vs GPoolPyWSGIWorker, churn", "requests/s", True),
    (
        "gunicorn-pywsgi-keepalive",
        "rps",
        "gunicorn -k gevent_pywsgi vs GPoolPyWSGIWorker, keep-alive",
        "requests/s",
        True,
    ),
)
_SHORT = {
    "default": "spawn=\n'default'",
    "pool": "gevent.pool\n.Pool",
    "gpool": "WorkerPool",
    "gpool-noiso": "WorkerPool\nisolate=False",
    "gpool@alt": "WorkerPool\n[alt]",
    "gpool-noiso@alt": "WorkerPool\nisolate=False\n[alt]",
    "floor": "floor: bare\nreuse pool",
    "handoff": "handoff: bare\nhand-off",
}
_COLOURS = {"default": "#9e9e9e", "pool": "#5c6bc0", "gpool": "#e65100", "gpool-noiso": "#ffa726", "floor": "#26a69a"}


def _short(name: str, labels: dict[str, str]) -> str:
    """A bar's label: the gunicorn scenarios name worker classes, the others strategies."""
    if name in labels:
        return labels[name].replace("gunicorn -k ", "-k ").replace("gpool.workers.", "").replace(", ", "\n")
    return _SHORT.get(name, name)


def write_chart(report: dict[str, Any], path: str) -> str | None:
    """Draw the report's chart into *path*; None once written, else why nothing was."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'gpool[bench]')"
    scenarios = report["scenarios"]
    panels = [p for p in _PANELS if p[1] in scenarios.get(p[0], {}).get("summary", {})]
    if not panels:
        return "no scenario finished with figures to draw"
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (scenario, metric, title, unit, higher) in zip(axes.flat, panels):
        summary = scenarios[scenario]["summary"][metric]
        labels = scenarios[scenario].get("labels", {})
        names = list(summary)
        medians = [summary[n]["median"] for n in names]
        low = [summary[n]["median"] - summary[n]["min"] for n in names]
        high = [summary[n]["max"] - summary[n]["median"] for n in names]
        colours = [_COLOURS.get(n.split("@")[0], "#26a69a") for n in names]
        xs = range(len(names))
        ax.bar(xs, medians, yerr=[low, high], color=colours, capsize=3)
        for x, n in zip(xs, names):
            ratio = summary[n].get("vs_pool")
            if ratio is not None and not math.isnan(ratio):
                ax.annotate(f"{ratio:.2f}x", (x, summary[n]["max"]), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")  # fmt: skip
        ax.set_xticks(list(xs))
        ax.set_xticklabels([_short(n, labels) for n in names], fontsize=7)
        ax.set_ylim(0, max(summary[n]["max"] for n in names) * 1.15)
        ax.set_title(f"{title} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    m = report["machine"]
    fig.suptitle(
        f"gpool bench: {m.get('cpu_model', '?')}, Python {m.get('python')}, gevent {m.get('gevent', '?')}; "
        f"load: {report['load']}; ratios vs gevent.pool.Pool (gunicorn: vs gevent's worker class)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
