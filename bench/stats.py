"""Small numeric helpers: percentiles, rates, rounding for the report."""

from __future__ import annotations

import math

MIB = 1024 * 1024


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    """count, min, p50, p95, max, mean of `values` (seconds in, seconds out)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


def per_second(times: list[float], start: float) -> list[int]:
    """How many of `times` fall in each whole second after `start`: the shape of a burst
    (a link that is slow at first and then speeds up shows as rising counts)."""
    counts: list[int] = []
    for t in times:
        second = max(0, int(t - start))
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts
