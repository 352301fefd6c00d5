"""A/B statistics against hand-computed examples (worked on paper) and against scipy's implementations."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from serve.ab.stats import mcnemar_test, percentile, two_proportion_z_test, verdict, wilson_interval


def test_wilson_interval_hand_computed():
    # 8 of 10: p=0.8, z^2/n=0.38415; centre=(0.8+0.19207)/1.38415=0.71681;
    # half=1.95996*sqrt(0.016+0.0096037)/1.38415=0.22657 -> (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == pytest.approx(0.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_matches_scipy():
    for x, n in [(8, 10), (81, 263), (299, 300), (1, 40)]:
        ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(x, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_two_proportion_z_test_hand_computed():
    # 45/100 vs 60/100: pooled 0.525, se=sqrt(0.525*0.475*0.02)=0.070622, z=0.15/0.070622=2.1240, p=0.03367
    t = two_proportion_z_test(45, 100, 60, 100)
    assert t.difference == pytest.approx(0.15)
    assert t.z == pytest.approx(2.1240, abs=1e-4)
    assert t.p_value == pytest.approx(0.03367, abs=1e-5)
    assert t.p_value == pytest.approx(2 * stats.norm.sf(t.z), rel=1e-9)
    assert two_proportion_z_test(5, 5, 7, 7).p_value == 1.0  # both perfect: nothing to tell apart


def test_mcnemar_hand_computed():
    # 10 vs 25 discordant pairs: chi2=(|10-25|-1)^2/35=5.6, p=erfc(sqrt(2.8))=0.01797
    t = mcnemar_test(10, 25)
    assert t.method == "chi2-cc" and t.statistic == pytest.approx(5.6)
    assert t.p_value == pytest.approx(0.01797, abs=1e-5)
    assert t.p_value == pytest.approx(stats.chi2.sf(5.6, 1), rel=1e-9)
    # 3 vs 12: exact, p = 2 * (1 + 15 + 105 + 455) / 2^15 = 0.03515625
    exact = mcnemar_test(3, 12)
    assert exact.method == "exact" and exact.p_value == pytest.approx(0.03515625, abs=1e-12)
    assert exact.p_value == pytest.approx(stats.binomtest(3, 15).pvalue, rel=1e-9)
    assert mcnemar_test(0, 0).p_value == 1.0 and mcnemar_test(4, 4).p_value == 1.0


def test_percentile_interpolates_like_numpy():
    values = [0.010, 0.020, 0.030, 0.040, 0.100]
    assert percentile(values, 50) == pytest.approx(0.030)
    assert percentile(values, 95) == pytest.approx(0.04 + 0.8 * 0.06)
    assert percentile([], 50) is None


def test_verdict_in_plain_words():
    p = two_proportion_z_test(140, 156, 143, 156).p_value
    assert verdict("a", 140, 156, "b", 143, 156, p) == f"no significant difference at n=312 (p={p:.2g})"
    t = two_proportion_z_test(45, 100, 60, 100)
    assert verdict("a", 45, 100, "b", 60, 100, t.p_value) == (
        "b is more accurate than a (60.0% vs 45.0%), significant at n=200 (p=0.034)")
    assert verdict("a", 0, 0, "b", 3, 4, 1.0).startswith("not enough feedback")
    assert not math.isnan(p)
