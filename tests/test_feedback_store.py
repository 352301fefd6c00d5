"""The SQLite feedback store and the A/B report built from it, on a hand-computed example."""
from __future__ import annotations

import time

import pytest

from serve.ab.report import build_report
from serve.config import ExperimentConfig
from serve.errors import BadParameter, BadRequest, UnknownLabel
from serve.ab.feedback import label_index, parse_feedback
from serve.ab.store import FeedbackStore, Prediction

EXPERIMENT = ExperimentConfig(arms=[{"model": "a", "weight": 1}, {"model": "b", "weight": 1}], mode="shadow")


def served(store: FeedbackStore, arm: str, n: int, correct: int, latency_s: float = 0.01) -> list[str]:
    """n single-image requests predicting class 1; the first `correct` get label 1, the rest label 2."""
    ids = []
    for i in range(n):
        rid = f"{arm}-{i}"
        store.record([Prediction(rid, 0, arm, f"{arm}/1", 1, 0.5 + i / (2 * n), latency_s * (i + 1))])
        assert store.add_feedback(rid, 0, 1 if i < correct else 2)
        ids.append(rid)
    return ids


def test_report_matches_the_hand_computed_example(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite", max_rows=1000, retention_s=3600)
    served(store, "a", 10, 8)
    served(store, "b", 10, 5)
    report = build_report(store, EXPERIMENT)
    a, b = report["arms"]
    assert (a["requests"], a["feedback"], a["correct"], a["accuracy"]) == (10, 10, 8, 0.8)
    # Wilson 8/10 by hand: (0.4902, 0.9433); see tests/test_abstats.py
    assert a["accuracy_ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    # latencies 0.01..0.10: p50 = 0.055, p95 = 0.0955 (linear interpolation)
    assert a["latency_p50_s"] == pytest.approx(0.055) and a["latency_p95_s"] == pytest.approx(0.0955)
    assert a["mean_confidence"] == pytest.approx(0.725)  # 0.5 + mean(0..9)/20
    # 8/10 vs 5/10: pooled 0.65, se = sqrt(0.65 * 0.35 * 0.2) = 0.21331, z = -0.3 / 0.21331 = -1.4064, p = 0.1596
    (cmp,) = report["comparisons"]
    assert cmp["difference"] == pytest.approx(-0.3) and cmp["z"] == pytest.approx(-1.4064, abs=1e-4)
    assert cmp["p_value"] == pytest.approx(0.1596, abs=1e-4)
    assert report["verdict"] == "no significant difference at n=20 (p=0.16)"
    assert report["shadow"] == []


def test_shadow_pairs_feed_mcnemar(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite", max_rows=1000, retention_s=3600)
    ids = served(store, "a", 20, 15)  # primary right on the first 15 (label 1), wrong on the last 5 (label 2)
    # shadow predicts 1 on the first 5, 2 on the rest: it is right on ids 0-4 and 15-19
    store.record_shadow([Prediction(rid, 0, "b", "b/1", 1 if i < 5 else 2, 0.9, 0.02) for i, rid in enumerate(ids)])
    (pair,) = build_report(store, EXPERIMENT)["shadow"]
    assert (pair["compared"], pair["paired_feedback"]) == (20, 20)
    assert pair["agreement"] == pytest.approx(5 / 20)
    # b = primary only right: ids 5-14 (10); c = shadow only right: ids 15-19 (5); exact: 2 * P(X <= 5 | 15) = 0.3018
    assert (pair["b_primary_only_correct"], pair["c_shadow_only_correct"]) == (10, 5)
    assert pair["mcnemar_method"] == "exact" and pair["p_value"] == pytest.approx(0.30175781, abs=1e-8)


def test_feedback_counts_once_and_survives_reopening(tmp_path):
    path = tmp_path / "f.sqlite"
    store = FeedbackStore(path, max_rows=1000, retention_s=3600)
    store.record([Prediction("r1", 0, "a", "a/1", 3, 0.9, 0.01)])
    assert store.add_feedback("r1", 0, 3) and not store.add_feedback("r1", 0, 4)
    store.close()
    again = FeedbackStore(path, max_rows=1000, retention_s=3600)
    assert again.find("r1") == Prediction("r1", 0, "a", "a/1", 3, 0.9, 0.01)
    assert not again.add_feedback("r1", 0, 3)
    assert again.arm_outcomes("a").correct == 1 and again.find("nope") is None


def test_store_is_bounded_by_rows_and_retention(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite", max_rows=100, retention_s=0.5)
    for i in range(150):
        store.record([Prediction(f"r{i}", 0, "a", "a/1", 1, 0.9, 0.01)])
    store.prune()
    assert store.arm_outcomes("a").requests == 100 and store.find("r0") is None and store.find("r149")
    time.sleep(0.6)
    assert store.find("r149") is None  # expired, even before the next prune removes it
    store.prune()
    assert store.arm_outcomes("a").requests == 0


@pytest.mark.parametrize("body, error", [
    (b"not json", BadRequest), (b"[1, 2]", BadRequest), (b'{"label": 1}', BadParameter),
    (b'{"request_id": "x"}', BadParameter), (b'{"request_id": "x", "label": true}', BadParameter),
    (b'{"request_id": "x", "label": 1, "image": -1}', BadParameter),
    (b'{"request_id": "x", "label": 1, "colour": 1}', BadParameter),
])
def test_bad_feedback_bodies_are_refused(body, error):
    with pytest.raises(error):
        parse_feedback(body)


def test_labels_by_name_or_index():
    labels = ["cat", "dog", "7"]
    assert label_index("dog", labels) == 1 and label_index(2, labels) == 2 and label_index("7", labels) == 2
    for bad in ("horse", 3, -1):
        with pytest.raises(UnknownLabel):
            label_index(bad, labels)
