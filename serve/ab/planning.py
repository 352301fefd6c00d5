"""How many feedback labels, and how long, an A/B experiment needs before it can tell a given difference.

Two answers side by side: the fixed-sample two-proportion test's planned size (valid only if read once, at
that size) and what the always-valid sequential test of serve.ab.sequential needs on average when the true
difference is the one planned for (it may be read at any time and stops as soon as it is sure).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

from serve.ab.peeking import peeking_runs
from serve.ab.sequential import DEFAULT_ALPHA, DEFAULT_TAU


def _shares(weights: Sequence[float]) -> tuple[float, float]:
    if len(weights) != 2 or min(weights) <= 0:
        raise ValueError(f"weights: need two positive numbers, got {list(weights)}")
    return weights[0] / sum(weights), weights[1] / sum(weights)


def fixed_sample_size(baseline: float, min_difference: float, alpha: float = DEFAULT_ALPHA, power: float = 0.8,
                      weights: Sequence[float] = (50, 50)) -> tuple[int, int]:
    """Labels for arms A and B so that a two-sided pooled z-test at alpha detects accuracy_b = baseline +
    min_difference with the given power:

        n_a = (z_{1-alpha/2} sqrt(p (1 - p) (1 + 1/r)) + z_power sqrt(p_a q_a + p_b q_b / r))^2 / d^2,  n_b = r n_a,

    r = n_b / n_a from the weights, p the weighted mean accuracy under the null (no continuity correction).
    """
    p_a, p_b = baseline, baseline + min_difference
    if not (0 < p_a < 1 and 0 < p_b < 1) or min_difference == 0:
        raise ValueError(f"need 0 < baseline, baseline + min_difference < 1 and a nonzero difference, "
                         f"got baseline={baseline}, min_difference={min_difference}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha}, {power}")
    share_a, share_b = _shares(weights)
    r = share_b / share_a
    p = (p_a + r * p_b) / (1 + r)
    z = NormalDist().inv_cdf
    root = z(1 - alpha / 2) * math.sqrt(p * (1 - p) * (1 + 1 / r)) + z(power) * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b) / r)
    n_a = math.ceil(root ** 2 / min_difference ** 2)
    return n_a, math.ceil(r * n_a)


def sequential_labels(baseline: float, min_difference: float, alpha: float = DEFAULT_ALPHA,
                      weights: Sequence[float] = (50, 50), tau: float = DEFAULT_TAU, reference_total: int = 1000,
                      experiments: int = 400, seed: int = 0) -> dict[str, float]:
    """Labels (both arms together) the sequential test takes to decide at this true difference, simulated.

    Looks come every reference_total/50 labels (the planned fixed size, so the overshoot past the crossing is
    a 2% step) up to 5 times reference_total; seeded so the same question gives the same answer.
    """
    share_a, share_b = _shares(weights)
    batch = max(10, round(reference_total / 50))
    batch_a, batch_b = max(1, round(batch * share_a)), max(1, round(batch * share_b))
    stops = peeking_runs(np.random.default_rng(seed), experiments, 250, batch_a, batch_b, baseline,
                         baseline + min_difference, alpha, tau)["sequential"]
    labels = stops.look * (batch_a + batch_b)
    right = (stops.look > 0) & (stops.sign == np.sign(min_difference))
    # Experiments that never decided count at the cap: the mean is then a lower bound, stated as such.
    capped = np.where(stops.look > 0, labels, 250 * (batch_a + batch_b))
    return {"mean_labels": float(capped.mean()), "median_labels": float(np.median(capped)),
            "p90_labels": float(np.percentile(capped, 90)), "decided_right": float(right.mean()),
            "cap_labels": 250 * (batch_a + batch_b), "experiments": experiments}


def plan(baseline: float, min_difference: float, rate: float, alpha: float = DEFAULT_ALPHA, power: float = 0.8,
         weights: Sequence[float] = (50, 50), tau: float = DEFAULT_TAU, seed: int = 0) -> dict[str, Any]:
    """Planned labels and time for both tests; rate is feedback labels per second over all arms."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 labels/s, got {rate}")
    n_a, n_b = fixed_sample_size(baseline, min_difference, alpha, power, weights)
    sequential = sequential_labels(baseline, min_difference, alpha, weights, tau, n_a + n_b, seed=seed)
    share_a, share_b = _shares(weights)
    fixed_seconds = max(n_a / (rate * share_a), n_b / (rate * share_b))
    return {"baseline": baseline, "min_difference": min_difference, "alpha": alpha, "power": power,
            "weights": list(weights), "rate_labels_per_s": rate, "tau": tau,
            "fixed": {"labels_per_arm": [n_a, n_b], "labels": n_a + n_b, "seconds": fixed_seconds},
            "sequential": {**sequential, "mean_seconds": sequential["mean_labels"] / rate,
                           "median_seconds": sequential["median_labels"] / rate}}


def duration(seconds: float) -> str:
    """Seconds in the unit a person plans with."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
