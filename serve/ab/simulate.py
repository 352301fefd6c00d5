"""python -m serve.ab.simulate: what peeking at an A/B report does to the fixed-sample test and to the sequential one.

Simulates many experiments, reads both tests after every batch of feedback and stops at the first p < alpha.
Writes docs/ab/SEQUENTIAL.md (the figures and the command) and docs/ab/sequential.png.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from serve.ab.peeking import Stops, peeking_runs
from serve.ab.planning import fixed_sample_size
from serve.ab.sequential import DEFAULT_ALPHA, DEFAULT_TAU

TESTS = ("fixed", "sequential")
CHUNK = 500  # experiments simulated at once: bounded memory, and a progress bar that moves


def run(experiments: int, looks: int, look_every: int, baseline: float, differences: list[float], alpha: float,
        tau: float, seed: int, progress: bool = False) -> dict[float, dict[str, Stops]]:
    """Stops of both tests for each true difference, equal split (look_every labels per arm per look)."""
    rng = np.random.default_rng(seed)
    chunks = [min(CHUNK, experiments - start) for start in range(0, experiments, CHUNK)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chunks) * len(differences), desc="simulating", unit="chunk", file=sys.stderr)
    results = {}
    for d in differences:
        parts = []
        for size in chunks:
            parts.append(peeking_runs(rng, size, looks, look_every, look_every, baseline, baseline + d, alpha, tau))
            if bar:
                bar.update()
        results[d] = {t: Stops(np.concatenate([p[t].look for p in parts]), np.concatenate([p[t].sign for p in parts]))
                      for t in TESTS}
    if bar:
        bar.close()
    return results


def false_positive_curve(stops: Stops, looks: int) -> np.ndarray:
    """Share of A/A experiments declared significant within the first k looks, k = 1..looks."""
    return np.array([stops.rejected_by(k).mean() for k in range(1, looks + 1)])


def decision_summary(stops: Stops, difference: float, look_every: int) -> dict[str, Any]:
    """Power (right direction), wrong-direction rate, and labels per arm to a decision among those decided."""
    decided = stops.look > 0
    labels = stops.look[decided] * look_every
    return {"power": float((decided & (stops.sign == np.sign(difference))).mean()),
            "wrong_direction": float((decided & (stops.sign == -np.sign(difference))).mean()),
            "mean_labels": float(labels.mean()) if decided.any() else None,
            "median_labels": float(np.median(labels)) if decided.any() else None}


def plot(results: dict, baseline: float, looks: int, look_every: int, alpha: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    k = np.arange(1, looks + 1)
    for test, style in zip(TESTS, ("-", "--")):
        left.plot(k, false_positive_curve(results[0.0][test], looks), style, label=f"{test} test, stop at first p<{alpha:g}")
    left.axhline(alpha, color="grey", lw=0.8, ls=":", label=f"nominal {alpha:g}")
    left.set(xlabel=f"number of looks (one every {look_every} labels per arm)", ylabel="false-positive rate (A/A)",
             title=f"Peeking under A/A, accuracy {baseline:.0%}", xscale="log")
    left.legend()
    labels = k * look_every
    for i, d in enumerate(sorted(d for d in results if d != 0.0)):
        color = f"C{i}"
        for test, style in zip(TESTS, ("-", "--")):
            stops = results[d][test]
            right.plot(labels, [(stops.rejected_by(j) & (stops.sign == np.sign(d))).mean() for j in k], style,
                       color=color, label=f"{test}, difference {d:+.1%}")
        right.axvline(fixed_sample_size(baseline, d, alpha)[0], color=color, lw=0.8, ls=":")
    right.set(xlabel="labels per arm", ylabel="share decided for the better arm",
              title="Time to a decision (dotted: fixed-sample plan, 80% power)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict, args: argparse.Namespace, looks: int, command: str) -> str:
    n = args.experiments
    aa = {t: false_positive_curve(results[0.0][t], looks) for t in TESTS}
    marks = sorted({1, 10, looks} | ({100} if looks > 100 else set()))
    se = lambda p: (p * (1 - p) / n) ** 0.5  # noqa: E731  Monte Carlo standard error
    lines = ["# Peeking at an A/B report: fixed-sample vs always-valid sequential test", "",
             "Produced by:", "", "```", command, "```", "",
             f"{n} simulated experiments per row; accuracy of A {args.baseline:.0%}; both arms get {args.look_every} "
             f"feedback labels between looks, up to {looks * args.look_every} per arm ({looks} looks); the experiment "
             f"stops at the first look with p < {args.alpha:g}. Fixed: the pooled two-proportion z-test of "
             f"`serve/ab/stats.py`, read as if each look were the only one. Sequential: the mSPRT of "
             f"`serve/ab/sequential.py` (normal prior on the difference, tau = {args.tau:g}), whose p-value is "
             f"always valid.", "",
             "## False-positive rate under A/A (no true difference)", "",
             "| looks | fixed test | sequential test |", "|---:|---:|---:|"]
    for k in marks:
        lines.append(f"| {k} | {aa['fixed'][k - 1]:.1%} ± {se(aa['fixed'][k - 1]):.2%} | "
                     f"{aa['sequential'][k - 1]:.1%} ± {se(aa['sequential'][k - 1]):.2%} |")
    lines += ["", "(± one Monte Carlo standard error.) With one look the fixed test keeps its 5%; every extra look "
              "is another chance for noise to cross, and the sequential test's bound holds however often it is read.",
              "", "## Power and labels to a decision", "",
              "Power: share of experiments that stopped for the better arm within the cap; labels: per arm, among "
              "the experiments that stopped. The fixed-sample plan is the size at which one single look has 80% power.",
              "", "| true difference | fixed-sample plan (labels/arm) | test | power | wrong direction | "
              "mean labels/arm | median labels/arm |", "|---:|---:|---|---:|---:|---:|---:|"]
    for d in sorted(d for d in results if d != 0.0):
        planned = fixed_sample_size(args.baseline, d, args.alpha)[0]
        for t in TESTS:
            s = decision_summary(results[d][t], d, args.look_every)
            mean = f"{s['mean_labels']:.0f}" if s["mean_labels"] is not None else "-"
            median = f"{s['median_labels']:.0f}" if s["median_labels"] is not None else "-"
            lines.append(f"| {d:+.1%} | {planned} | {t} | {s['power']:.1%} | {s['wrong_direction']:.1%} | {mean} | {median} |")
    lines += ["", "The fixed test's power under peeking is bought with its inflated false-positive rate above, "
              "and it sometimes crowns the worse arm (wrong direction); it is what a refreshing reader of the "
              "report gets, not a fair comparison. Read once at its planned size it has 80% power and 5% false "
              "positives. Where the plan exceeds the cap the sequential test has not finished either.", "",
              "![false positives vs looks; time to a decision](sequential.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.ab.simulate", description=__doc__)
    parser.add_argument("--experiments", type=int, default=2000, help="simulated experiments per true difference")
    parser.add_argument("--max-labels", type=int, default=5000, help="labels per arm before giving up")
    parser.add_argument("--look-every", type=int, default=50, help="labels per arm between looks")
    parser.add_argument("--baseline", type=float, default=0.9, help="accuracy of arm A")
    parser.add_argument("--difference", type=float, action="append",
                        help="true accuracy_b - accuracy_a, repeatable; 0 (A/A) is always run")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/ab"))
    args = parser.parse_args(argv)
    if args.experiments < 1 or args.look_every < 1 or args.max_labels < args.look_every:
        parser.error("need --experiments >= 1 and --max-labels >= --look-every >= 1")
    differences = sorted({0.0, *(args.difference or [])})
    if not all(0 < args.baseline + d < 1 for d in differences):
        parser.error("every baseline + difference must lie in (0, 1)")
    looks = args.max_labels // args.look_every
    results = run(args.experiments, looks, args.look_every, args.baseline, differences, args.alpha, args.tau,
                  args.seed, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.baseline, looks, args.look_every, args.alpha, args.out / "sequential.png")
    command = "python -m serve.ab.simulate " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = markdown(results, args, looks, command)
    (args.out / "SEQUENTIAL.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
