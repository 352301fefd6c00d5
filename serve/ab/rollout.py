"""Guarded progressive rollout: when the challenger's share of traffic grows, holds, or falls back to nothing.

A plan (serve.config.RolloutConfig) lists the challenger's weights, e.g. 5, 25, 50, 100 percent. At each step
`decide` reads the evidence and answers one of:

- rollback at the first *clear* breach of a guardrail, however early: a confidence bound, not a point estimate,
  lies beyond the limit, so noise does not trip it;
- hold while the evidence is short: too little time or feedback at this step, non-inferiority not yet shown, or
  an observed error rate or latency ratio over its limit that is not yet a clear breach;
- advance to the next step when everything passes; complete when the last step passes.

Accuracy is a property of the model, not of its share, so it is judged on all labels since the rollout began,
with one always-valid confidence sequence (serve.ab.sequential) watched at every decision: the rollout may look
as often as it likes and still errs with probability at most alpha. Errors and latency depend on the load the
challenger carries, so they are judged per step. At a 100% step the baseline answers nothing; its reference is
then its own previous step (`windows`).

Pure: no I/O and no clock; the caller passes the evidence and the time. Each advance, rollback or completion
concludes one step (`Decision.step`), so a store that keeps at most one such decision per (experiment, step)
lets any number of replicas decide at once and agree (docs/ab/ROLLOUT.md). The idea of analysis steps with
metric guardrails is the one of progressive-delivery controllers such as Flagger and Argo Rollouts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np

from serve.ab.experiment import Arm
from serve.ab.sequential import confidence_sequence, paired_win_share_sequence, quantile_interval, quantile_ranks
from serve.config import ExperimentConfig, RolloutConfig

Action = Literal["advance", "hold", "rollback", "complete"]
Status = Literal["running", "completed", "rolled_back"]


@dataclass(frozen=True)
class ArmEvidence:
    """One arm's answers within its window (`windows`): counts, and its p95 latency with a (1 - alpha) interval
    from order statistics (`p95_ranks` says which ones). The p95 figures are None with too few samples."""

    requests: int = 0
    errors: int = 0  # 5xx answers among the requests
    feedback: int = 0  # labels for those requests
    p95_s: float | None = None
    p95_low_s: float | None = None
    p95_high_s: float | None = None

    def __post_init__(self) -> None:
        if min(self.requests, self.errors, self.feedback) < 0 or self.errors > self.requests:
            raise ValueError(f"need 0 <= errors <= requests and feedback >= 0, got {self}")

    @classmethod
    def from_samples(cls, requests: int, errors: int, feedback: int, latencies_s: Sequence[float],
                     alpha: float) -> "ArmEvidence":
        """For callers that hold the latencies themselves (the simulation, tests)."""
        if len(latencies_s) == 0:
            return cls(requests, errors, feedback)
        low, high = quantile_interval(latencies_s, 0.95, alpha)
        return cls(requests, errors, feedback, float(np.quantile(latencies_s, 0.95)), low, high)


@dataclass(frozen=True)
class Accuracy:
    """Labels and correct answers per arm since the rollout started."""

    baseline_feedback: int = 0
    baseline_correct: int = 0
    challenger_feedback: int = 0
    challenger_correct: int = 0

    def __post_init__(self) -> None:
        for n, correct in ((self.baseline_feedback, self.baseline_correct),
                           (self.challenger_feedback, self.challenger_correct)):
            if not 0 <= correct <= n:
                raise ValueError(f"need 0 <= correct <= feedback for each arm, got {self}")


@dataclass(frozen=True)
class Evidence:
    baseline: ArmEvidence
    challenger: ArmEvidence
    accuracy: Accuracy
    shadow_compared: int = 0  # requests mirrored to the other arm in this step (shadow evidence, optional)
    shadow_agreed: int = 0  # of those, answered with the same top-1 class

    def __post_init__(self) -> None:
        if not 0 <= self.shadow_agreed <= self.shadow_compared:
            raise ValueError(f"need 0 <= shadow_agreed <= shadow_compared, got {self.shadow_agreed} and "
                             f"{self.shadow_compared}")


@dataclass(frozen=True)
class Decision:
    action: Action
    step: int  # the step this decision concludes (a hold: the step it stays at)
    weight: float  # the challenger's weight in percent from now on
    reason: str
    at: float

    @property
    def concludes_step(self) -> bool:
        """Whether a store keeps it under the unique key (experiment, step); holds are not kept per step."""
        return self.action != "hold"


@dataclass(frozen=True)
class RolloutState:
    step_starts: tuple[float, ...]  # when each step reached so far began; the last is the current step
    status: Status = "running"
    history: tuple[Decision, ...] = ()

    @classmethod
    def start(cls, now: float) -> "RolloutState":
        return cls((now,))

    @property
    def step(self) -> int:
        return len(self.step_starts) - 1

    @property
    def step_started(self) -> float:
        return self.step_starts[-1]

    def after(self, decision: Decision) -> "RolloutState":
        """The state once `decision` is applied; a decision for another step than the current one is refused,
        so a replica with a stale state cannot apply a conclusion twice."""
        if self.status != "running":
            raise ValueError(f"the rollout is {self.status}; it takes no further decisions")
        if decision.step != self.step:
            raise ValueError(f"decision for step {decision.step}, but the rollout is at step {self.step}")
        history = self.history + (decision,)
        if decision.action == "advance":
            return RolloutState(self.step_starts + (decision.at,), "running", history)
        status = {"hold": "running", "rollback": "rolled_back", "complete": "completed"}[decision.action]
        return replace(self, status=status, history=history)


def replay(started: float, decisions: Sequence[Decision]) -> RolloutState:
    """The state from the stored decisions of one rollout, in step order (what every replica reads back)."""
    state = RolloutState.start(started)
    for decision in sorted(decisions, key=lambda d: d.step):
        state = state.after(decision)
    return state


@dataclass(frozen=True)
class Windows:
    """Which predictions (by the time they were served) each part of the evidence counts: [since, until)."""

    challenger: tuple[float, float]
    baseline: tuple[float, float]
    accuracy: tuple[float, float]  # both arms' labels and correct answers


def windows(plan: RolloutConfig, state: RolloutState, now: float) -> Windows:
    step = (state.step_started, now)
    baseline = step
    if plan.steps[state.step] >= 100:  # the first step is below 100 (RolloutConfig)
        baseline = (state.step_starts[-2], state.step_started)  # no baseline traffic now: its previous step
    return Windows(step, baseline, (state.step_starts[0], now))


def p95_ranks(n: int, alpha: float) -> tuple[int | None, int | None]:
    """The ranks of the latencies that bound the p95 among n (see sequential.quantile_ranks)."""
    return quantile_ranks(n, 0.95, alpha)


def baseline_of(experiment: ExperimentConfig) -> str:
    if experiment.rollout is None:
        raise ValueError(f"experiment {experiment.name!r} has no rollout")
    return next(a.model for a in experiment.arms if a.model != experiment.rollout.challenger)


def challenger_weight(plan: RolloutConfig, state: RolloutState) -> float:
    return 0.0 if state.status == "rolled_back" else plan.steps[state.step]


def arm_weights(experiment: ExperimentConfig, state: RolloutState) -> tuple[Arm, ...]:
    """The arms for ExperimentRouter: baseline 100 - w, challenger w, leaving out an arm at 0 (a rolled-back
    challenger, or the baseline after a complete rollout to 100%), so that no user is ever assigned to it."""
    plan = experiment.rollout
    w = challenger_weight(plan, state)
    arms = (Arm(baseline_of(experiment), 100.0 - w), Arm(plan.challenger, w))
    return tuple(a for a in arms if a.weight > 0)


def decide(plan: RolloutConfig, state: RolloutState, evidence: Evidence, now: float) -> Decision | None:
    """The next decision for the current step; None once the rollout is completed or rolled back."""
    if state.status != "running":
        return None
    w = plan.steps[state.step]
    breach = _breach(plan, evidence)
    if breach:
        return Decision("rollback", state.step, 0.0, f"rollback at {w:g}%: {breach}", now)
    wait = _shortfall(plan, state, evidence, now)
    if wait:
        return Decision("hold", state.step, w, f"hold at {w:g}%: {wait}", now)
    figures = _passing_figures(plan, evidence)
    if state.step + 1 < len(plan.steps):
        nxt = plan.steps[state.step + 1]
        return Decision("advance", state.step, nxt, f"advance from {w:g}% to {nxt:g}%: {figures}", now)
    return Decision("complete", state.step, w, f"complete at {w:g}%: {figures}", now)


def accuracy_sequence(plan: RolloutConfig, a: Accuracy) -> tuple[float, float]:
    """Always-valid [lo, hi] for accuracy_challenger - accuracy_baseline; (-1, 1) while an arm has no labels."""
    return confidence_sequence(a.baseline_correct, a.baseline_feedback, a.challenger_correct, a.challenger_feedback,
                               plan.alpha)


def _latency_ratio(e: Evidence) -> float | None:
    if e.challenger.p95_s is None or not e.baseline.p95_s:
        return None
    return e.challenger.p95_s / e.baseline.p95_s


def _breach(plan: RolloutConfig, e: Evidence) -> str | None:
    """The first guardrail clearly breached, in words with its figures; None when none is."""
    c = e.challenger
    # The share of 5xx: the beta-binomial confidence sequence of serve.ab.sequential, read as errors among requests.
    err_low, _ = paired_win_share_sequence(c.requests - c.errors, c.errors, plan.alpha)
    if c.errors and err_low > plan.max_error_rate:
        return (f"challenger errors {c.errors} of {c.requests} ({c.errors / c.requests:.1%}), "
                f"at least {err_low:.1%} > {plan.max_error_rate:.1%}")
    b_high, c_low = e.baseline.p95_high_s, c.p95_low_s
    if b_high is not None and c_low is not None and c_low > plan.max_p95_latency_ratio * b_high:
        return (f"challenger p95 latency at least {c_low * 1e3:.0f} ms > {plan.max_p95_latency_ratio:g} x "
                f"baseline p95 at most {b_high * 1e3:.0f} ms")
    lo, hi = accuracy_sequence(plan, e.accuracy)
    if hi < -plan.accuracy_margin:
        return (f"accuracy challenger - baseline in [{lo:+.3f}, {hi:+.3f}], below -{plan.accuracy_margin:g} "
                f"({e.accuracy.challenger_feedback} and {e.accuracy.baseline_feedback} labels)")
    if plan.min_shadow_agreement is not None and e.shadow_compared:
        _, agree_high = paired_win_share_sequence(e.shadow_compared - e.shadow_agreed, e.shadow_agreed, plan.alpha)
        if agree_high < plan.min_shadow_agreement:
            return (f"challenger agrees with baseline on {e.shadow_agreed} of {e.shadow_compared} shadowed requests, "
                    f"at most {agree_high:.1%} < {plan.min_shadow_agreement:.1%}")
    return None


def _shortfall(plan: RolloutConfig, state: RolloutState, e: Evidence, now: float) -> str | None:
    """What the step still lacks before it may conclude, in words; None when nothing."""
    c = e.challenger
    elapsed = now - state.step_started
    if elapsed < plan.min_step_s:
        return f"{elapsed:.0f} of {plan.min_step_s:g} s"
    if c.feedback < plan.min_feedback:
        return f"{c.feedback} of {plan.min_feedback} feedback labels on the challenger"
    lo, hi = accuracy_sequence(plan, e.accuracy)
    if lo <= -plan.accuracy_margin:
        return (f"non-inferiority not shown yet: accuracy challenger - baseline in [{lo:+.3f}, {hi:+.3f}], "
                f"lower bound not above -{plan.accuracy_margin:g}")
    if c.requests and c.errors / c.requests > plan.max_error_rate:
        return f"challenger errors {c.errors / c.requests:.1%} over {plan.max_error_rate:.1%}, not yet a clear breach"
    ratio = _latency_ratio(e)
    if ratio is None:
        return "no p95 latency for both arms yet"
    if ratio > plan.max_p95_latency_ratio:
        return f"p95 ratio {ratio:.2f} over {plan.max_p95_latency_ratio:g}, not yet a clear breach"
    if plan.min_shadow_agreement is not None and e.shadow_compared:
        agreement = e.shadow_agreed / e.shadow_compared
        if agreement < plan.min_shadow_agreement:
            return f"shadow agreement {agreement:.1%} under {plan.min_shadow_agreement:.1%}, not yet a clear breach"
    return None


def _passing_figures(plan: RolloutConfig, e: Evidence) -> str:
    lo, _ = accuracy_sequence(plan, e.accuracy)
    c = e.challenger
    words = (f"{c.feedback} labels on the challenger, "
             f"non-inferior (lower bound {lo:+.4g} > -{plan.accuracy_margin:g}), "
             f"p95 ratio {_latency_ratio(e):.2f} <= {plan.max_p95_latency_ratio:g}, "
             f"errors {c.errors / c.requests if c.requests else 0.0:.1%}")
    if plan.min_shadow_agreement is not None and e.shadow_compared:
        words += f", shadow agreement {e.shadow_agreed / e.shadow_compared:.1%}"
    return words
