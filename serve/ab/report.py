"""GET /ab/report: per-arm outcomes from the feedback store, and whether their difference is real.

The store aggregates in the database (counts, accuracy, mean confidence, latency percentiles); this module only
turns those few numbers into the report and its tests."""
from __future__ import annotations

import functools
from typing import Any

from serve.ab.planning import plan
from serve.ab.sequential import always_valid_comparison, always_valid_paired, paired_win_share_sequence
from serve.ab.stats import mcnemar_test, two_proportion_z_test, verdict, wilson_interval
from serve.config import ExperimentConfig
from serve.ab.store import ArmOutcomes, FeedbackStore, ShadowOutcomes


def describe_experiment(experiment: ExperimentConfig | None) -> dict[str, Any] | None:
    if experiment is None:
        return None
    return {"name": experiment.name, "enabled": experiment.enabled, "mode": experiment.mode,
            "sticky_header": experiment.sticky_header, "primary": experiment.primary_arm,
            "arms": [{"arm": a.model, "weight": a.weight} for a in experiment.arms]}


def arm_summary(o: ArmOutcomes) -> dict[str, Any]:
    lo, hi = wilson_interval(o.correct, o.feedback)
    return {"arm": o.arm, "requests": o.requests, "feedback": o.feedback, "correct": o.correct,
            "accuracy": o.correct / o.feedback if o.feedback else None,
            "accuracy_ci95": [lo, hi] if o.feedback else None,
            "latency_p50_s": o.latency_p50_s, "latency_p95_s": o.latency_p95_s,
            "latency_p95_ci95_s": list(o.latency_p95_interval_s),
            "mean_confidence": o.mean_confidence}


def compare(a: ArmOutcomes, b: ArmOutcomes) -> dict[str, Any]:
    """Split traffic: independent samples, so a two-proportion z-test on feedback accuracy."""
    test = two_proportion_z_test(a.correct, a.feedback, b.correct, b.feedback)
    return {"arms": [a.arm, b.arm], "n": a.feedback + b.feedback, "difference": test.difference,
            "z": test.z, "p_value": test.p_value,
            "verdict": verdict(a.arm, a.correct, a.feedback, b.arm, b.correct, b.feedback, test.p_value),
            # valid however often the report is read: the fixed-sample p-value above is not (docs/ab/SEQUENTIAL.md)
            "always_valid": always_valid_comparison(a.correct, a.feedback, b.correct, b.feedback,
                                                    names=(a.arm, b.arm))}


def paired(o: ShadowOutcomes) -> dict[str, Any]:
    """Shadow mode: both arms saw the same images, so McNemar's test on the discordant pairs."""
    test = mcnemar_test(o.primary_only_correct, o.shadow_only_correct)
    if o.paired_feedback == 0:
        words = "no paired feedback yet"
    elif test.p_value >= 0.05:
        words = f"no significant difference at n={o.paired_feedback} paired (p={test.p_value:.2g})"
    else:
        better = o.shadow if o.shadow_only_correct > o.primary_only_correct else o.primary
        words = f"{better} is more accurate, significant at n={o.paired_feedback} paired (p={test.p_value:.2g})"
    return {"primary": o.primary, "shadow": o.shadow, "compared": o.compared,
            "agreement": o.agreed / o.compared if o.compared else None,
            "shadow_latency_p50_s": o.latency_p50_s, "shadow_latency_p95_s": o.latency_p95_s,
            "paired_feedback": o.paired_feedback, "b_primary_only_correct": o.primary_only_correct,
            "c_shadow_only_correct": o.shadow_only_correct, "mcnemar_statistic": test.statistic,
            "mcnemar_method": test.method, "p_value": test.p_value, "verdict": words,
            "agreement_confidence_sequence": (list(paired_win_share_sequence(o.compared - o.agreed, o.agreed))
                                              if o.compared else None),
            "always_valid": always_valid_paired(o.primary_only_correct, o.shadow_only_correct,
                                                names=(o.primary, o.shadow))}


def build_report(store: FeedbackStore, experiment: ExperimentConfig | None) -> dict[str, Any]:
    names = [a.model for a in experiment.arms] if experiment else []
    outcomes, pairs = store.outcomes(names, experiment.primary_arm if experiment else None)
    comparisons = [compare(outcomes[0], other) for other in outcomes[1:]]
    shadows = [s for s in (paired(o) for o in pairs) if s["compared"]]
    return {"experiment": describe_experiment(experiment), "arms": [arm_summary(o) for o in outcomes],
            "comparisons": comparisons, "shadow": shadows,
            "verdict": safe_verdict(experiment, comparisons, shadows),
            "planning": planning(experiment, outcomes, store.feedback_span())}


MIN_BASELINE_LABELS = 30


def planning(experiment: ExperimentConfig | None, outcomes: list[ArmOutcomes],
             span: tuple[int, float | None, float | None]) -> dict[str, Any] | None:
    """How many labels, and how long at the feedback rate seen so far, the experiment needs to tell
    `experiment.min_difference` from the first arm's accuracy (serve.ab.planning; `python -m serve.ab.plan`)."""
    if experiment is None or len(experiment.arms) != 2 or not outcomes:
        return None
    base, (labels, first, last) = outcomes[0], span
    if base.feedback < MIN_BASELINE_LABELS or not first or last <= first:
        return {"status": f"waiting for {MIN_BASELINE_LABELS} labels on {base.arm} and a feedback rate"}
    accuracy = min(max(base.correct / base.feedback, 0.01), 0.99)
    # plan for a gain where there is room above the baseline, else for a loss of the same size
    difference = experiment.min_difference if accuracy + experiment.min_difference < 1 else -experiment.min_difference
    rate = labels / (last - first)
    weights = tuple(a.weight for a in experiment.arms)
    return {"status": "planned", **cached_plan(round(accuracy, 2), difference, float(f"{rate:.2g}"), weights)}


@functools.lru_cache(maxsize=256)
def cached_plan(baseline: float, difference: float, rate: float, weights: tuple[float, ...]) -> dict[str, Any]:
    """Rounded inputs and a cache: the sequential estimate is a simulation (~0.3 s), the report is refreshed often."""
    return plan(baseline, difference, rate, weights=weights)


def safe_verdict(experiment: ExperimentConfig | None, comparisons: list[dict[str, Any]],
                 shadows: list[dict[str, Any]]) -> str:
    """The report's headline is the always-valid verdict: people refresh the page and stop at the first
    "significant", which a fixed-sample test cannot survive."""
    if experiment is None or not comparisons:
        return "no experiment configured"
    if experiment.mode == "shadow" and shadows:
        return shadows[0]["always_valid"]["verdict"]
    return comparisons[0]["always_valid"]["verdict"]
