"""Always-valid A/B inference: p-values and confidence sequences that stay valid however often they are read.

The fixed-sample tests in serve.ab.stats hold their 5% false-positive rate only when the data are looked at
once, at a sample size fixed in advance. People refresh GET /ab/report and stop at the first "significant",
which turns noise into a winner far more often than 5% (docs/ab/SEQUENTIAL.md measures it). The mixture
sequential probability ratio test (mSPRT) fixes this:

- R. Johari, P. Koomen, L. Pekelis, D. Walsh, "Peeking at A/B Tests: Why it matters, and what to do about
  it", KDD 2017.
- R. Johari, L. Pekelis, D. Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests",
  Operations Research 70(3), 2022.

The likelihood ratio Lambda_n of "the difference is theta" against "it is theta0", mixed over a prior on
theta, is a nonnegative martingale with mean 1 under theta0, so by Ville's inequality
P(Lambda_n >= 1/alpha for some n) <= alpha. Hence p_n = min(1, 1/Lambda_n) may be watched continuously:
stopping at the first p_n < alpha errs with probability at most alpha. The sequential definition is the
running minimum p_n = min(p_{n-1}, 1/Lambda_n); the functions here see counts at one instant and return the
current min(1, 1/Lambda_n), so a caller that keeps state (a dashboard, an alert) keeps the running minimum
of the p-value and the running intersection of the confidence sequences. Both are valid either way.

Functions accept numpy arrays as well as numbers (serve.ab.simulate runs thousands of experiments at once);
no scipy, as in serve.ab.stats.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

DEFAULT_ALPHA = 0.05
# Standard deviation of the normal prior on the accuracy difference. The test is most powerful for
# differences near the prior's scale: 0.03 suits model upgrades that move accuracy by a few points. At 90%
# accuracy it decides a true 2-point difference after a median of about the labels the fixed-sample test plans
# for 80% power (docs/ab/SEQUENTIAL.md). A larger tau finds large differences sooner and small ones later.
DEFAULT_TAU = 0.03
# Beta(a, a) prior on the share of disagreements that the second arm wins (paired test). a = 10 puts
# a prior standard deviation of 0.11 around 1/2: a 60/40 split of the disagreements is a typical effect.
DEFAULT_PAIRED_PRIOR = 10.0


def _check_counts(correct: int, n: int, name: str) -> None:
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"{name}: need 0 <= correct <= n, got correct={correct}, n={n}")


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def difference_variance(correct_a, n_a, correct_b, n_b):
    """Variance of accuracy_b - accuracy_a from independent arms.

    Accuracies are shrunk to (correct + 1) / (n + 2) first: a first batch that is all right (or all wrong)
    would otherwise have zero variance and look infinitely certain.
    """
    pa = (correct_a + 1) / (n_a + 2)
    pb = (correct_b + 1) / (n_b + 2)
    return pa * (1 - pa) / n_a + pb * (1 - pb) / n_b


def log_mixture_ratio(difference, variance, tau: float = DEFAULT_TAU, theta0=0.0):
    """log Lambda_n of the mSPRT with a N(theta0, tau^2) prior on the difference (normal approximation).

    For an estimate D ~ N(theta, V): Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (D - theta0)^2 / (2 V (V + tau^2))),
    the normal-approximation mSPRT of Johari et al. (2017), with their 2 sigma^2 / n written as V so that the
    arms may differ in size. V is estimated from the data (difference_variance), so the guarantee is asymptotic, as in the papers;
    docs/ab/SEQUENTIAL.md measures 2.6% false positives at 90% accuracy read 200 times from 50 labels per arm.
    """
    t2 = tau * tau
    return 0.5 * np.log(variance / (variance + t2)) + t2 * (difference - theta0) ** 2 / (2 * variance * (variance + t2))


def cs_half_width(variance, alpha: float = DEFAULT_ALPHA, tau: float = DEFAULT_TAU):
    """Half-width of the confidence sequence: the thetas0 with Lambda_n(theta0) < 1/alpha, solved for theta0."""
    t2 = tau * tau
    return np.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + np.log((variance + t2) / variance)))


def always_valid_p_value(correct_a: int, n_a: int, correct_b: int, n_b: int, tau: float = DEFAULT_TAU) -> float:
    """min(1, 1/Lambda_n) for "the two accuracies are equal"; 1 while an arm has no feedback."""
    if n_a == 0 or n_b == 0:
        return 1.0
    log_lambda = log_mixture_ratio(correct_b / n_b - correct_a / n_a, difference_variance(correct_a, n_a, correct_b, n_b), tau)
    return float(min(1.0, math.exp(-log_lambda)))


def confidence_sequence(correct_a: int, n_a: int, correct_b: int, n_b: int, alpha: float = DEFAULT_ALPHA,
                        tau: float = DEFAULT_TAU) -> tuple[float, float]:
    """[lo, hi] for accuracy_b - accuracy_a that covers the true difference at every n at once, with
    probability 1 - alpha. It excludes 0 exactly when always_valid_p_value < alpha."""
    if n_a == 0 or n_b == 0:
        return (-1.0, 1.0)
    diff = correct_b / n_b - correct_a / n_a
    half = float(cs_half_width(difference_variance(correct_a, n_a, correct_b, n_b), alpha, tau))
    return (max(-1.0, diff - half), min(1.0, diff + half))


def always_valid_comparison(correct_a: int, n_a: int, correct_b: int, n_b: int, alpha: float = DEFAULT_ALPHA, *,
                            tau: float = DEFAULT_TAU, names: Sequence[str] = ("A", "B")) -> dict[str, Any]:
    """Split mode, for GET /ab/report: always-valid p-value, confidence sequence for accuracy_b - accuracy_a,
    and a verdict that is safe to read, and act on, at any moment."""
    _check_counts(correct_a, n_a, names[0])
    _check_counts(correct_b, n_b, names[1])
    _check_alpha(alpha)
    p = always_valid_p_value(correct_a, n_a, correct_b, n_b, tau)
    lo, hi = confidence_sequence(correct_a, n_a, correct_b, n_b, alpha, tau)
    if n_a == 0 or n_b == 0:
        words = f"not enough feedback yet ({names[0]}: n={n_a}, {names[1]}: n={n_b}); keep collecting"
    elif p < alpha:
        better, worse = (names[1], names[0]) if correct_b / n_b > correct_a / n_a else (names[0], names[1])
        gap = sorted((abs(lo), abs(hi)))
        words = (f"{better} is more accurate than {worse}, by {gap[0]:.1%} to {gap[1]:.1%} "
                 f"(always-valid p={p:.2g}); safe to stop")
    else:
        words = (f"no difference can be claimed yet ({names[1]} - {names[0]} lies in [{lo:+.1%}, {hi:+.1%}], "
                 f"always-valid p={p:.2g}); keep collecting")
    return {"always_valid_p_value": p, "confidence_sequence": [lo, hi], "alpha": alpha, "tau": tau, "verdict": words}


def paired_log_mixture_ratio(b: int, c: int, prior: float = DEFAULT_PAIRED_PRIOR, q0: float = 0.5) -> float:
    """log Lambda for discordant pairs: b won by the first arm, c by the second; q = P(second | discordant).

    Beta(prior, prior)-binomial mixture over q against q = q0: Lambda = B(prior + c, prior + b) / B(prior, prior)
    / (q0^c (1 - q0)^b). This is the mixture likelihood ratio of the mSPRT (H. Robbins, "Statistical methods
    related to the law of the iterated logarithm", Ann. Math. Statist. 41(5), 1970; Johari, Pekelis, Walsh 2022)
    with the conjugate beta prior, so under q0 it is an exact martingale, no normal approximation: Ville's
    inequality bounds its crossing of 1/alpha by alpha. A sequential McNemar test.
    """
    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    q0 = min(max(q0, 1e-12), 1 - 1e-12)
    return log_beta(prior + c, prior + b) - log_beta(prior, prior) - c * math.log(q0) - b * math.log1p(-q0)


def paired_win_share_sequence(b: int, c: int, alpha: float = DEFAULT_ALPHA,
                              prior: float = DEFAULT_PAIRED_PRIOR) -> tuple[float, float]:
    """Confidence sequence for q, the second arm's share of the disagreements: the q0 not rejected.

    log Lambda(q0) is convex in q0 and at most 0 at q0 = c / (b + c) (a mixture never beats the best fit),
    so the set is an interval whose two ends bisection finds.
    """
    if b + c == 0:
        return (0.0, 1.0)
    bound = math.log(1 / alpha)
    centre = c / (b + c)

    def edge(inside: float, outside: float) -> float:
        if paired_log_mixture_ratio(b, c, prior, outside) < bound:
            return outside
        for _ in range(60):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if paired_log_mixture_ratio(b, c, prior, mid) < bound else (inside, mid)
        return inside

    return (edge(centre, 0.0), edge(centre, 1.0))


def always_valid_paired(b: int, c: int, alpha: float = DEFAULT_ALPHA, *, prior: float = DEFAULT_PAIRED_PRIOR,
                        names: Sequence[str] = ("primary", "shadow")) -> dict[str, Any]:
    """Shadow mode, for GET /ab/report: b = pairs only names[0] got right, c = pairs only names[1] got right.

    Always-valid p-value that both are equally likely, the confidence sequence for names[1]'s share of the
    disagreements, and a verdict safe to read at any moment.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant pair counts must be >= 0, got b={b}, c={c}")
    _check_alpha(alpha)
    p = float(min(1.0, math.exp(-paired_log_mixture_ratio(b, c, prior))))
    lo, hi = paired_win_share_sequence(b, c, alpha, prior)
    if b + c == 0:
        words = "no disagreements with feedback yet; keep collecting"
    elif p < alpha:
        better, share = (names[1], (lo, hi)) if c > b else (names[0], (1 - hi, 1 - lo))
        words = (f"{better} is more accurate: it is the one right on {share[0]:.0%} to {share[1]:.0%} of the images "
                 f"where only one arm is right (always-valid p={p:.2g}); safe to stop")
    else:
        words = (f"no difference can be claimed yet ({names[1]} is the one right on {lo:.0%} to {hi:.0%} of the "
                 f"disagreements, always-valid p={p:.2g}); keep collecting")
    return {"always_valid_p_value": p, "win_share": c / (b + c) if b + c else None,
            "win_share_confidence_sequence": [lo, hi], "alpha": alpha, "prior": prior, "verdict": words}


def quantile_ranks(n: int, q: float = 0.95, alpha: float = DEFAULT_ALPHA) -> tuple[int | None, int | None]:
    """The 1-based ranks (ascending) of the order statistics that bound the q-quantile with confidence 1 - alpha
    among n samples, so that a database reads two rows instead of all of them.

    With K = #samples below the true quantile ~ Binomial(n, q), [x_(l), x_(u)] covers it with probability
    P(l <= K < u); l and u are taken so that each tail holds at most alpha/2. A rank that would need more
    samples than there are (p95's upper end needs 72 at alpha 0.05) is None. Fixed-sample, not always-valid.
    """
    if not 0 < q < 1:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    _check_alpha(alpha)
    if n == 0:
        return (None, None)
    k = np.arange(n)
    # log pmf of Binomial(n, q) at 0..n by the ratio pmf(k+1)/pmf(k), in logs so that large n does not underflow
    steps = np.log(n - k) - np.log(k + 1) + math.log(q) - math.log1p(-q)
    log_pmf = n * math.log1p(-q) + np.concatenate(([0.0], np.cumsum(steps)))
    cdf = np.cumsum(np.exp(log_pmf))
    # lower end x_(l): the largest l with P(K <= l - 1) <= alpha/2
    low = int(np.searchsorted(cdf, alpha / 2, side="right"))
    # upper end x_(u): the smallest u with P(K <= u - 1) >= 1 - alpha/2
    high = int(np.searchsorted(cdf, 1 - alpha / 2, side="left")) + 1
    return (low if low >= 1 else None, high if high <= n else None)


def quantile_interval(samples: Sequence[float], q: float = 0.95,
                      alpha: float = DEFAULT_ALPHA) -> tuple[float | None, float | None]:
    """Distribution-free (1 - alpha) interval for the q-quantile (e.g. latency p95) from order statistics
    (`quantile_ranks`); an end with too few samples is None."""
    x = np.sort(np.asarray(samples, dtype=float))
    low, high = quantile_ranks(len(x), q, alpha)
    return (None if low is None else float(x[low - 1]), None if high is None else float(x[high - 1]))
