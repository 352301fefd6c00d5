"""Many simulated A/B experiments at once, read after every batch of feedback: where each test first says "significant".

One engine for serve.ab.simulate (false-positive rate and power under peeking) and serve.ab.planning (the
sequential test's expected labels), vectorised with numpy so that thousands of experiments take seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from serve.ab.sequential import DEFAULT_ALPHA, DEFAULT_TAU, difference_variance, log_mixture_ratio


@dataclass(frozen=True)
class Stops:
    """Per experiment: the 1-based look at which a test first rejected (0: never), and the sign of
    accuracy_b - accuracy_a there (+1 B better, -1 A better, 0 never)."""
    look: np.ndarray
    sign: np.ndarray

    def rejected_by(self, looks: int) -> np.ndarray:
        return (self.look >= 1) & (self.look <= looks)


def first_rejection(reject: np.ndarray, difference: np.ndarray) -> Stops:
    """reject and difference are (experiments, looks)."""
    any_reject = reject.any(axis=1)
    first = reject.argmax(axis=1)
    sign = np.sign(difference[np.arange(len(first)), first]).astype(int)
    return Stops(np.where(any_reject, first + 1, 0), np.where(any_reject, sign, 0))


def peeking_runs(rng: np.random.Generator, experiments: int, looks: int, batch_a: int, batch_b: int, p_a: float,
                 p_b: float, alpha: float = DEFAULT_ALPHA, tau: float = DEFAULT_TAU) -> dict[str, Stops]:
    """Arms A and B get batch_a and batch_b labels (right with probability p_a, p_b) before each look.

    "fixed": the pooled two-proportion z-test of serve.ab.stats, read as if each look were the only one;
    "sequential": the mSPRT of serve.ab.sequential (p < alpha exactly when Lambda >= 1/alpha).
    """
    correct_a = rng.binomial(batch_a, p_a, (experiments, looks)).cumsum(axis=1)
    correct_b = rng.binomial(batch_b, p_b, (experiments, looks)).cumsum(axis=1)
    n_a = batch_a * np.arange(1, looks + 1)
    n_b = batch_b * np.arange(1, looks + 1)
    difference = correct_b / n_b - correct_a / n_a
    pooled = (correct_a + correct_b) / (n_a + n_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = difference / np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z_critical = NormalDist().inv_cdf(1 - alpha / 2)
    fixed = np.nan_to_num(np.abs(z), nan=0.0) >= z_critical  # all right or all wrong in both arms: no evidence
    log_lambda = log_mixture_ratio(difference, difference_variance(correct_a, n_a, correct_b, n_b), tau)
    sequential = log_lambda >= math.log(1 / alpha)
    return {"fixed": first_rejection(fixed, difference), "sequential": first_rejection(sequential, difference)}
