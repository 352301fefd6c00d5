"""python -m serve.ab.rollout_sim: a guarded rollout (serve.ab.rollout) driven by simulated traffic.

Requests arrive at a steady rate and split by the challenger's weight; each arm answers correctly, slowly or with
a 5xx according to its profile, and a share of the answers gets a label after a delay. Every tick the controller
reads the evidence through the same windows a store would use and decides. Seeded, so a run is reproducible.
Writes DIR/rollout_<challenger>.png (the timeline) and prints the decision log; --repeat N prints how often each
outcome happens over N seeds instead.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serve.ab.rollout import (Accuracy, ArmEvidence, Decision, Evidence, RolloutState, Windows, decide, windows,
                              accuracy_sequence)
from serve.config import RolloutConfig


@dataclass(frozen=True)
class ArmProfile:
    accuracy: float
    latency_median_s: float
    error_rate: float


LATENCY_SIGMA = 0.4  # log-normal spread: p95 = 1.93 x median
BASELINE = ArmProfile(accuracy=0.80, latency_median_s=0.050, error_rate=0.001)
CHALLENGERS = {
    "same": BASELINE,  # an A/A rollout: must complete, never roll back
    "good": ArmProfile(0.81, 0.050, 0.001),
    "worse": ArmProfile(0.75, 0.050, 0.001),  # 5 points less accurate
    "slow": ArmProfile(0.81, 0.100, 0.001),  # p95 twice the baseline's
    "flaky": ArmProfile(0.81, 0.050, 0.05),  # 5% of answers are 5xx
}
PLAN = RolloutConfig(challenger="challenger", steps=[5, 25, 50, 100], min_step_s=300, min_feedback=200,
                     max_error_rate=0.01, max_p95_latency_ratio=1.5, accuracy_margin=0.02)
ARMS = ("baseline", "challenger")


@dataclass
class Served:
    """What one arm did in each tick (stamped with the tick's start): the rows a store would hold."""

    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    feedback: list[int] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    latencies: list[np.ndarray] = field(default_factory=list)

    def add(self, rng: np.random.Generator, n: int, profile: ArmProfile, feedback_share: float) -> None:
        errors = int(rng.binomial(n, profile.error_rate))
        labelled = int(rng.binomial(n - errors, feedback_share))
        self.requests.append(n)
        self.errors.append(errors)
        self.feedback.append(labelled)
        self.correct.append(int(rng.binomial(labelled, profile.accuracy)))
        self.latencies.append(rng.lognormal(np.log(profile.latency_median_s), LATENCY_SIGMA, n - errors))


@dataclass(frozen=True)
class Tick:
    t: float
    weight: float
    accuracy: tuple[float | None, float | None]  # baseline, challenger, since the rollout started
    difference: tuple[float, float]  # always-valid sequence for challenger - baseline
    p95: tuple[ArmEvidence, ArmEvidence]


@dataclass
class Run:
    challenger: str
    ticks: list[Tick]
    decisions: list[Decision]
    state: RolloutState


class Timeline:
    """The served rows of both arms, and the evidence they give for any windows."""

    def __init__(self, tick_s: float, feedback_delay_s: float) -> None:
        self.tick_s, self.feedback_delay_s = tick_s, feedback_delay_s
        self.served = {arm: Served() for arm in ARMS}

    def _ticks(self, since: float, until: float) -> slice:
        return slice(int(np.ceil(since / self.tick_s)), int(np.ceil(until / self.tick_s)))

    def arm(self, arm: str, window: tuple[float, float], now: float, alpha: float) -> ArmEvidence:
        s, ticks = self.served[arm], self._ticks(*window)
        return ArmEvidence.from_samples(sum(s.requests[ticks]), sum(s.errors[ticks]),
                                        self._labels(s.feedback, window, now),
                                        np.concatenate(s.latencies[ticks] or [np.empty(0)]), alpha)

    def _labels(self, counts: list[int], window: tuple[float, float], now: float) -> int:
        """Labels arrive feedback_delay_s after the answer: only those already in by `now` count."""
        return sum(counts[self._ticks(window[0], min(window[1], now - self.feedback_delay_s))])

    def evidence(self, plan: RolloutConfig, w: Windows, now: float) -> Evidence:
        b, c = self.served["baseline"], self.served["challenger"]
        accuracy = Accuracy(self._labels(b.feedback, w.accuracy, now), self._labels(b.correct, w.accuracy, now),
                            self._labels(c.feedback, w.accuracy, now), self._labels(c.correct, w.accuracy, now))
        return Evidence(self.arm("baseline", w.baseline, now, plan.alpha),
                        self.arm("challenger", w.challenger, now, plan.alpha), accuracy)


def simulate(challenger: str, plan: RolloutConfig = PLAN, *, rate: float = 50.0, feedback_share: float = 0.5,
             feedback_delay_s: float = 30.0, tick_s: float = 10.0, max_s: float = 4 * 3600.0, seed: int = 0) -> Run:
    """One rollout from its start until it completes, rolls back, or max_s of simulated time pass."""
    rng = np.random.default_rng(seed)
    profiles = {"baseline": BASELINE, "challenger": CHALLENGERS[challenger]}
    timeline = Timeline(tick_s, feedback_delay_s)
    state, ticks, decisions = RolloutState.start(0.0), [], []
    t = 0.0
    while state.status == "running" and t < max_s:
        weight = plan.steps[state.step]
        n = int(rng.poisson(rate * tick_s))
        to_challenger = int(rng.binomial(n, weight / 100))
        timeline.served["baseline"].add(rng, n - to_challenger, profiles["baseline"], feedback_share)
        timeline.served["challenger"].add(rng, to_challenger, profiles["challenger"], feedback_share)
        t += tick_s
        evidence = timeline.evidence(plan, windows(plan, state, t), t)
        decision = decide(plan, state, evidence, t)
        state = state.after(decision)
        decisions.append(decision)
        a = evidence.accuracy
        ticks.append(Tick(t, weight, (a.baseline_correct / a.baseline_feedback if a.baseline_feedback else None,
                                      a.challenger_correct / a.challenger_feedback if a.challenger_feedback else None),
                          accuracy_sequence(plan, a), (evidence.baseline, evidence.challenger)))
    return Run(challenger, ticks, decisions, state)


def decision_log(run: Run) -> list[str]:
    """Every conclusion, and each hold whose kind differs from the one before (not one line per tick)."""
    lines, last_kind = [], None
    for d in run.decisions:
        kind = re.sub(r"[-+\d.]+", "#", d.reason)
        if d.action != "hold" or kind != last_kind:
            lines.append(f"t={d.at:6.0f}s  {d.action:<8}  {d.reason}")
        last_kind = kind
    if run.state.status == "running":
        lines.append(f"(still running after {run.ticks[-1].t:.0f} s)")
    return lines


def plot(run: Run, plan: RolloutConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = np.array([k.t for k in run.ticks]) / 60
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    weight, acc, diff, lat = axes
    # the last point repeats the last time with the weight the last decision set: a rollback drops to 0
    weight.step(np.append(minutes, minutes[-1]), [k.weight for k in run.ticks] + [run.decisions[-1].weight],
                where="pre", color="C1")
    weight.set(ylabel="challenger weight (%)", ylim=(-5, 110),
               title=f"Guarded rollout, {run.challenger} challenger: {run.state.status.replace('_', ' ')}")
    marks = {"advance": ("^", "C2"), "complete": ("*", "C2"), "rollback": ("X", "C3")}
    for d in run.decisions:
        if d.action in marks:
            marker, color = marks[d.action]
            weight.plot(d.at / 60, d.weight, marker=marker, color=color, ms=11)
            weight.annotate(f"{d.action} ({d.weight:g}%)", (d.at / 60, d.weight), textcoords="offset points",
                            xytext=(6, 6), fontsize=8, color=color)
            for ax in axes:
                ax.axvline(d.at / 60, color=color, lw=0.7, ls=":")
    for i, arm in enumerate(ARMS):
        acc.plot(minutes, [np.nan if k.accuracy[i] is None else k.accuracy[i] for k in run.ticks], label=arm)
    acc.set(ylabel="accuracy since start")
    acc.legend(loc="lower right")
    lo, hi = np.array([k.difference for k in run.ticks]).T
    diff.fill_between(minutes, lo, hi, alpha=0.3, color="C4", label="always-valid confidence sequence")
    diff.plot(minutes, (lo + hi) / 2, color="C4")
    diff.axhline(-plan.accuracy_margin, color="C3", ls="--", lw=1, label=f"-margin ({plan.accuracy_margin:g})")
    diff.axhline(0, color="grey", lw=0.7)
    diff.set(ylabel="accuracy challenger - baseline", ylim=(-0.25, 0.25))
    diff.legend(loc="lower right")
    for i, arm in enumerate(ARMS):
        ev = [k.p95[i] for k in run.ticks]
        nan = lambda x: np.nan if x is None else x * 1e3  # noqa: E731
        lat.plot(minutes, [nan(e.p95_s) for e in ev], label=f"{arm} p95 (this step)", color=f"C{i}")
        lat.fill_between(minutes, [nan(e.p95_low_s) for e in ev], [nan(e.p95_high_s) for e in ev], alpha=0.25,
                         color=f"C{i}")
    limit = [np.nan if k.p95[0].p95_high_s is None else k.p95[0].p95_high_s * plan.max_p95_latency_ratio * 1e3
             for k in run.ticks]
    lat.plot(minutes, limit, color="C3", ls="--", lw=1,
             label=f"rollback above: {plan.max_p95_latency_ratio:g} x baseline's upper bound")
    lat.set(ylabel="latency p95 (ms), 95% interval", xlabel="simulated time (minutes)")
    lat.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.ab.rollout_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--challenger", choices=sorted(CHALLENGERS), required=True)
    parser.add_argument("--out", type=Path, help="folder for rollout_<challenger>.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per simulated second")
    parser.add_argument("--feedback-share", type=float, default=0.5, help="share of answers that get a label")
    parser.add_argument("--repeat", type=int, default=0, help="run this many seeds and print outcome counts")
    args = parser.parse_args(argv)
    options = dict(rate=args.rate, feedback_share=args.feedback_share)
    if args.repeat:
        from tqdm import tqdm

        runs = [simulate(args.challenger, seed=args.seed + i, **options)
                for i in tqdm(range(args.repeat), desc="rollouts", unit="run")]
        for status in ("completed", "rolled_back", "running"):
            ends = [r.ticks[-1].t for r in runs if r.state.status == status]
            if ends:
                print(f"{status}: {len(ends)} of {len(runs)}, after a median of {np.median(ends):.0f} simulated s "
                      f"(range {min(ends):.0f} to {max(ends):.0f})")
        return 0
    run = simulate(args.challenger, seed=args.seed, **options)
    print("\n".join(decision_log(run)))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        plot(run, PLAN, args.out / f"rollout_{args.challenger}.png")
        print(f"wrote {args.out / f'rollout_{args.challenger}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
