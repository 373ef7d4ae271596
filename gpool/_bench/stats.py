"""Numbers from rounds: medians, ratios against a reference strategy, latency histograms.

Pure Python with no process or greenlet in sight, so it is unit-tested directly.
"""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

__all__ = [
    "floor_gain_share",
    "latency_bucket",
    "median",
    "merge_histograms",
    "paired_ratio",
    "percentile_ms",
    "summarize",
]

# Latencies are kept as a histogram of logarithmic buckets, 1% wide, so load
# generator processes can merge theirs and the JSON stays small. Bucket b holds
# latencies of about exp(b / BUCKETS_PER_E) microseconds.
BUCKETS_PER_E = 100


def median(values: Sequence[float]) -> float:
    """The median of *values*; NaN when there are none."""
    return statistics.median(values) if values else math.nan


def ratio(value: float, reference: float) -> float:
    """*value* / *reference*, NaN when the reference is zero or missing."""
    if not reference or math.isnan(reference):
        return math.nan
    return value / reference


def paired_ratio(values: Sequence[float], reference: Sequence[float]) -> float:
    """The median of round-by-round ratios. Rounds run back to back, so a slow phase of a
    noisy machine hits both sides of a pair; this is steadier than a ratio of medians."""
    pairs = [v / r for v, r in zip(values, reference) if r]
    return median(pairs)


def floor_gain_share(value: float, reference: float, floor: float) -> float:
    """What share of the floor's gain over *reference* *value* takes:
    (value - reference) / (floor - reference); NaN when the floor gains nothing."""
    gain = floor - reference
    if not gain or math.isnan(gain):
        return math.nan
    return (value - reference) / gain


def summarize(
    values: Mapping[str, Sequence[float]], reference: str = "pool", baseline: str = "default", floor: str = "floor"
) -> dict[str, dict[str, float]]:
    """Per strategy: median, min, max and the ratios of its median to the medians of
    *reference* and *baseline* (when they were measured), plus the paired ratio; with
    *floor* measured too, the ratio to it and the share of its gain over *reference*."""
    medians = {name: median(vals) for name, vals in values.items()}
    out: dict[str, dict[str, float]] = {}
    for name, vals in values.items():
        row = {
            "median": medians[name],
            "min": min(vals) if vals else math.nan,
            "max": max(vals) if vals else math.nan,
            "n": float(len(vals)),
        }
        if reference in values:
            row["vs_pool"] = ratio(medians[name], medians[reference])
            row["paired_vs_pool"] = paired_ratio(vals, values[reference])
        if baseline in values:
            row["vs_default"] = ratio(medians[name], medians[baseline])
        if floor in values:
            row["vs_floor"] = ratio(medians[name], medians[floor])
            if reference in values:
                row["floor_gain_share"] = floor_gain_share(medians[name], medians[reference], medians[floor])
        out[name] = row
    return out


def latency_bucket(us: float) -> int:
    """The histogram bucket of a latency of *us* microseconds."""
    return int(math.log(max(us, 1.0)) * BUCKETS_PER_E)


def merge_histograms(histograms: Sequence[Mapping[int, int]]) -> dict[int, int]:
    """Add up histograms bucket by bucket."""
    total: dict[int, int] = {}
    for hist in histograms:
        for bucket, count in hist.items():
            total[int(bucket)] = total.get(int(bucket), 0) + count
    return total


def percentile_ms(histogram: Mapping[int, int], q: float) -> float:
    """The *q*-th percentile (0-100) of a latency histogram, in milliseconds.

    Reported as the middle of the bucket that holds it, so within 0.5%.
    """
    total = sum(histogram.values())
    if not total:
        return math.nan
    rank = max(math.ceil(total * q / 100.0), 1)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return math.exp((bucket + 0.5) / BUCKETS_PER_E) / 1000.0
    return math.nan  # pragma: no cover - rank never exceeds total
