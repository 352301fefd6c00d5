"""Always-valid A/B inference: the properties that make it safe to read the report at any time, checked by
simulation, plus the planning formula against a value worked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from serve.ab import plan as plan_cli
from serve.ab import simulate
from serve.ab.planning import fixed_sample_size, plan
from serve.ab.sequential import (always_valid_comparison, always_valid_p_value, always_valid_paired,
                                 confidence_sequence, difference_variance, log_mixture_ratio,
                                 paired_log_mixture_ratio, quantile_interval)
from serve.ab.stats import normal_two_sided_p

GRID = [(xa, na, xb, nb) for na in (1, 20, 300, 5000) for nb in (1, 20, 300, 5000)
        for xa in sorted({0, na // 2, int(0.9 * na), na}) for xb in sorted({0, int(0.93 * nb), nb})]


def test_p_value_is_a_probability_and_agrees_with_the_confidence_sequence():
    for xa, na, xb, nb in GRID:
        result = always_valid_comparison(xa, na, xb, nb)
        p, (lo, hi) = result["always_valid_p_value"], result["confidence_sequence"]
        assert 0 <= p <= 1 and -1 <= lo <= xb / nb - xa / na <= hi <= 1
        assert (p < 0.05) == (lo > 0 or hi < 0), (xa, na, xb, nb)


def test_never_smaller_than_the_fixed_sample_p_value_from_the_same_estimate():
    """max over tau of Lambda at a given z is exp((z^2 - 1) / 2) / |z|, and 1 / that exceeds the normal tail."""
    for xa, na, xb, nb in GRID:
        variance = difference_variance(xa, na, xb, nb)
        fixed = normal_two_sided_p((xb / nb - xa / na) / math.sqrt(variance))
        for tau in (0.005, 0.03, 0.3):
            assert always_valid_p_value(xa, na, xb, nb, tau) >= fixed


def test_equal_arms_give_a_large_p_and_a_clear_difference_a_small_one():
    assert always_valid_p_value(900, 1000, 900, 1000) == 1.0
    result = always_valid_comparison(800, 1000, 900, 1000, names=("old", "new"))
    assert result["always_valid_p_value"] < 1e-6
    lo, hi = result["confidence_sequence"]
    assert 0 < lo < 0.1 < hi
    assert result["verdict"].startswith("new is more accurate than old") and "safe to stop" in result["verdict"]
    assert "keep collecting" in always_valid_comparison(90, 100, 92, 100)["verdict"]
    assert always_valid_comparison(0, 0, 5, 10)["confidence_sequence"] == [-1.0, 1.0]


def test_confidence_sequence_shrinks_with_n():
    widths = [np.subtract(*confidence_sequence(90 * k, 100 * k, 93 * k, 100 * k)[::-1]) for k in (1, 4, 16, 64)]
    assert all(a > b for a, b in zip(widths, widths[1:]))


def test_confidence_sequence_covers_the_true_difference_at_every_look_at_once():
    """Uniform coverage: fewer than alpha of the paths ever exclude the truth, though read 200 times."""
    rng = np.random.default_rng(1)
    paths, looks, batch, p_a, p_b = 1000, 200, 25, 0.88, 0.91
    xa = rng.binomial(batch, p_a, (paths, looks)).cumsum(axis=1)
    xb = rng.binomial(batch, p_b, (paths, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    excluded = log_mixture_ratio(xb / n - xa / n, difference_variance(xa, n, xb, n), theta0=p_b - p_a) >= math.log(20)
    assert excluded.any(axis=1).mean() <= 0.05 + 0.02
    assert excluded[:, -1].mean() < 0.01  # and at any one look it is far more conservative than 5%


def test_peeking_inflates_the_fixed_test_but_not_the_sequential_one():
    stops = simulate.run(400, 100, 50, 0.9, [0.0], 0.05, 0.03, seed=3)[0.0]
    assert stops["fixed"].rejected_by(100).mean() > 0.2
    assert stops["sequential"].rejected_by(100).mean() <= 0.05 + 0.02
    curve = simulate.false_positive_curve(stops["fixed"], 100)
    assert np.all(np.diff(curve) >= 0) and curve[0] < 0.08 < curve[9] < curve[-1]


def test_sequential_test_finds_a_real_difference_in_the_right_direction():
    stops = simulate.run(200, 100, 50, 0.9, [0.05], 0.05, 0.03, seed=4)[0.05]["sequential"]
    summary = simulate.decision_summary(stops, 0.05, 50)
    assert summary["power"] > 0.95 and summary["wrong_direction"] == 0
    assert 200 < summary["median_labels"] < 1500


def test_paired_test():
    assert always_valid_paired(0, 0)["always_valid_p_value"] == 1.0
    assert always_valid_paired(30, 30)["always_valid_p_value"] == 1.0  # a mixture never beats the best fit
    clear = always_valid_paired(10, 60, names=("resnet18", "resnet50"))
    lo, hi = clear["win_share_confidence_sequence"]
    assert clear["always_valid_p_value"] < 1e-4 and 0.5 < lo < 60 / 70 < hi < 1
    assert clear["verdict"].startswith("resnet50 is more accurate")
    assert always_valid_paired(60, 10)["verdict"].startswith("primary is more accurate")
    for b in range(0, 40, 3):
        for c in range(0, 40, 3):
            r = always_valid_paired(b, c)
            lo, hi = r["win_share_confidence_sequence"]
            assert (r["always_valid_p_value"] < 0.05) == (lo > 0.5 or hi < 0.5), (b, c)


@pytest.mark.parametrize("q", [0.5, 0.65])
def test_paired_test_holds_its_level_under_continuous_monitoring(q: float):
    """Exact martingale: discordant pairs split with probability q; the test of q0 = q rarely ever rejects."""
    rng = np.random.default_rng(5)
    wins = rng.random((1000, 400)) < q
    c = wins.cumsum(axis=1)[:, 4::5]  # look after every 5 discordant pairs
    b = np.arange(5, 401, 5) - c
    ever = [any(paired_log_mixture_ratio(int(bi), int(ci), q0=q) >= math.log(20) for bi, ci in zip(br, cr))
            for br, cr in zip(b, c)]
    assert np.mean(ever) <= 0.05 + 0.02


def test_latency_interval_brackets_the_sample_p95_and_covers_the_true_one():
    rng = np.random.default_rng(6)
    samples = rng.lognormal(-3, 0.5, 500)
    lo, hi = quantile_interval(samples)
    assert lo < np.percentile(samples, 95) < hi
    assert quantile_interval(range(71))[1] is None and quantile_interval(range(72))[1] is not None
    assert quantile_interval([]) == (None, None)
    true_p95 = -math.log(0.05)  # exponential(1)
    covered = [lo <= true_p95 <= hi for lo, hi in (quantile_interval(rng.exponential(size=200)) for _ in range(2000))]
    assert 0.95 - 0.015 <= np.mean(covered) <= 0.995


def test_latency_interval_order_statistics_match_scipy_binomial():
    n, q, alpha = 300, 0.95, 0.05
    lo, hi = quantile_interval(np.arange(1, n + 1), q, alpha)  # sample j is x_(j)
    binom = stats.binom(n, q)
    assert binom.cdf(lo - 1) <= alpha / 2 < binom.cdf(lo)
    assert binom.cdf(hi - 2) < 1 - alpha / 2 <= binom.cdf(hi - 1)


def test_planning_formula_hand_computed():
    # 0.90 vs 0.95, alpha 0.05 two-sided, power 0.8: p = 0.925, sqrt(2 * 0.925 * 0.075) = 0.372492,
    # sqrt(0.09 + 0.0475) = 0.370810; (1.959964 * 0.372492 + 0.841621 * 0.370810)^2 = (0.730072 + 0.312082)^2
    # = 1.086085; / 0.05^2 = 434.4 -> 435 per arm
    assert fixed_sample_size(0.90, 0.05) == (435, 435)
    n_a, n_b = fixed_sample_size(0.90, 0.05, weights=(80, 20))
    assert n_a == pytest.approx(4 * n_b, abs=4) and n_a + n_b > 870  # an unequal split costs labels


def test_plan_times_and_sequential_estimate():
    result = plan(0.90, 0.05, rate=5)
    assert result["fixed"]["labels"] == 870 and result["fixed"]["seconds"] == pytest.approx(870 / 5)
    seq = result["sequential"]
    assert seq["decided_right"] > 0.95 and 0.5 * 870 < seq["median_labels"] < 3 * 870
    assert seq["mean_seconds"] == pytest.approx(seq["mean_labels"] / 5)
    assert plan(0.90, 0.05, rate=5) == result  # seeded


@pytest.mark.parametrize("call", [lambda: always_valid_comparison(11, 10, 5, 10),
                                  lambda: always_valid_comparison(5, 10, 5, 10, alpha=0),
                                  lambda: always_valid_paired(-1, 3), lambda: fixed_sample_size(0.99, 0.02),
                                  lambda: plan(0.9, 0.02, rate=0), lambda: fixed_sample_size(0.9, 0.02, weights=(1, 0))])
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()


def test_command_lines(tmp_path, capsys):
    plan_cli.main(["--baseline", "0.9", "--min-difference", "0.05", "--rate", "2", "--weights", "50,50"])
    assert "435 + 435 = 870 labels, 7.2 min" in capsys.readouterr().out
    simulate.main(["--experiments", "100", "--max-labels", "500", "--look-every", "50", "--difference", "0.05",
                   "--out", str(tmp_path)])
    text = (tmp_path / "SEQUENTIAL.md").read_text()
    assert "--experiments 100" in text and "| +5.0% | 435 | sequential |" in text
    assert (tmp_path / "sequential.png").stat().st_size > 10_000
