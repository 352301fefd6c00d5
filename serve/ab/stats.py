"""Statistics for A/B reports: is the accuracy difference between two arms real?

Pure functions on counts, no scipy: normal tail probabilities come from math.erfc.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile
ALPHA = 0.05


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] at small n or p near 1."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class TwoProportionTest:
    difference: float  # p2 - p1
    z: float
    p_value: float


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> TwoProportionTest:
    """Pooled two-proportion z-test of p1 == p2 (independent samples, as split traffic gives)."""
    if n1 == 0 or n2 == 0:
        return TwoProportionTest(0.0, 0.0, 1.0)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return TwoProportionTest(p2 - p1, 0.0, 1.0)
    z = (p2 - p1) / se
    return TwoProportionTest(p2 - p1, z, normal_two_sided_p(z))


@dataclass(frozen=True)
class McNemarTest:
    b: int  # first right, second wrong
    c: int  # first wrong, second right
    statistic: float
    p_value: float
    method: str


EXACT_BELOW = 25  # discordant pairs under which the exact binomial test is used


def mcnemar_test(b: int, c: int) -> McNemarTest:
    """McNemar's test on paired outcomes (the same images through both arms, as shadow mode gives).

    Exact two-sided binomial test when there are few discordant pairs, else chi-square with
    continuity correction (1 degree of freedom, so p = erfc(sqrt(chi2 / 2))).
    """
    n = b + c
    if n == 0:
        return McNemarTest(b, c, 0.0, 1.0, "none")
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
        return McNemarTest(b, c, float(min(b, c)), min(1.0, 2 * tail), "exact")
    chi2 = (abs(b - c) - 1) ** 2 / n
    return McNemarTest(b, c, chi2, math.erfc(math.sqrt(chi2 / 2)), "chi2-cc")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def verdict(first: str, x1: int, n1: int, second: str, x2: int, n2: int, p_value: float) -> str:
    """One plain sentence: which arm is better, and whether the data can tell."""
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return f"not enough feedback yet ({first}: n={n1}, {second}: n={n2})"
    if p_value >= ALPHA:
        return f"no significant difference at n={n} (p={p_value:.2g})"
    better, worse = (second, first) if x2 / n2 > x1 / n1 else (first, second)
    acc = {first: x1 / n1, second: x2 / n2}
    return (f"{better} is more accurate than {worse} ({acc[better]:.1%} vs {acc[worse]:.1%}), "
            f"significant at n={n} (p={p_value:.2g})")
