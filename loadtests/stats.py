"""Percentiles and run summaries: numbers computed one way for every scenario."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def percentile_ms(latencies_s: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation between closest ranks) in milliseconds; None when empty."""
    if len(latencies_s) == 0:
        return None
    return 1000 * float(np.percentile(np.asarray(latencies_s, dtype=float), q))


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def knee(levels: Sequence[float], throughputs: Sequence[float], gain: float = 0.05) -> float | None:
    """The first load level after which more load adds less than `gain` (relative) throughput."""
    for i in range(1, len(levels)):
        if throughputs[i - 1] > 0 and throughputs[i] < throughputs[i - 1] * (1 + gain):
            return levels[i - 1]
    return None
