"""The offline A/B evaluation's report: statistics per arm, paired tests, markdown, JSON and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from serve.ab.stats import mcnemar_test, percentile, two_proportion_z_test, verdict, wilson_interval


def arm_stats(run, targets: Sequence[int]) -> dict[str, Any]:
    correct = sum(p == t for p, t in zip(run.predicted, targets))
    n = len(targets)
    lo, hi = wilson_interval(correct, n)
    return {"arm": run.arm, "route": run.route, "n": n, "correct": correct, "accuracy": correct / n,
            "accuracy_ci95": [lo, hi], "latency_p50_s": percentile(run.latency_s, 50),
            "latency_p95_s": percentile(run.latency_s, 95),
            "mean_confidence": sum(run.confidence) / n}


def paired_comparison(first, second, targets: Sequence[int]) -> dict[str, Any]:
    """The same images went to both arms: McNemar's test is the right one; the z-test is shown beside it."""
    right1 = [p == t for p, t in zip(first.predicted, targets)]
    right2 = [p == t for p, t in zip(second.predicted, targets)]
    b = sum(r1 and not r2 for r1, r2 in zip(right1, right2))
    c = sum(r2 and not r1 for r1, r2 in zip(right1, right2))
    mcnemar = mcnemar_test(b, c)
    n = len(targets)
    z = two_proportion_z_test(sum(right1), n, sum(right2), n)
    agreement = sum(p1 == p2 for p1, p2 in zip(first.predicted, second.predicted)) / n
    words = verdict(first.arm, sum(right1), n, second.arm, sum(right2), n, mcnemar.p_value)
    return {"arms": [first.arm, second.arm], "top1_agreement": agreement, "b_first_only_correct": b,
            "c_second_only_correct": c, "mcnemar_method": mcnemar.method, "mcnemar_p_value": mcnemar.p_value,
            "z": z.z, "z_test_p_value": z.p_value, "verdict": words.replace(f"n={2 * n}", f"n={n} paired images")}


def plot_accuracy(stats: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [s["arm"] for s in stats]
    acc = [s["accuracy"] for s in stats]
    err = [[a - s["accuracy_ci95"][0] for a, s in zip(acc, stats)], [s["accuracy_ci95"][1] - a for a, s in zip(acc, stats)]]
    ax.errorbar(names, acc, yerr=err, fmt="o", capsize=8, markersize=8)
    for x, a in enumerate(acc):
        ax.annotate(f"{a:.2%}", (x, a), textcoords="offset points", xytext=(12, 0), va="center")
    ax.set_ylabel("top-1 accuracy (95% Wilson interval)")
    ax.set_title(f"Accuracy per arm, n={stats[0]['n']} images each")
    ax.set_xlim(-0.5, len(names) - 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    every = [1000 * s for run in runs for s in run.latency_s]
    edges = [min(every) + (max(every) - min(every)) * i / 40 for i in range(41)]  # the same bins for every arm
    for run in runs:
        ax.hist([1000 * s for s in run.latency_s], bins=edges, alpha=0.55, label=run.arm)
    ax.set_xlabel("client-side latency per request (ms)")
    ax.set_ylabel("requests")
    ax.set_title("Latency distribution per arm")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(dataset: str, split: str, stats: list[dict], pairs: list[dict], server: dict, counted: int) -> str:
    lines = [f"# A/B offline evaluation: {' vs '.join(s['arm'] for s in stats)}", "",
             f"Dataset `{dataset}` ({split} split), {stats[0]['n']} labelled images, each sent to every arm.", "",
             "| arm | reached via | accuracy | 95% CI | p50 latency | p95 latency | mean confidence |",
             "|---|---|---|---|---|---|---|"]
    for s in stats:
        lo, hi = s["accuracy_ci95"]
        lines.append(f"| {s['arm']} | {s['route']} | {s['accuracy']:.2%} ({s['correct']}/{s['n']}) | "
                     f"{lo:.2%} - {hi:.2%} | {1000 * s['latency_p50_s']:.1f} ms | {1000 * s['latency_p95_s']:.1f} ms | "
                     f"{s['mean_confidence']:.3f} |")
    lines += ["", "## Is the difference real?", ""]
    for p in pairs:
        lines += [f"- **{p['verdict']}**",
                  f"  - paired (McNemar, {p['mcnemar_method']}): only {p['arms'][0]} right on {p['b_first_only_correct']}, "
                  f"only {p['arms'][1]} right on {p['c_second_only_correct']}, p = {p['mcnemar_p_value']:.3g}",
                  f"  - unpaired two-proportion z-test: z = {p['z']:.2f}, p = {p['z_test_p_value']:.3g}",
                  f"  - top-1 agreement between the arms: {p['top1_agreement']:.2%}"]
    lines += ["", "## The server's view (GET /ab/report after the feedback)", "",
              f"{counted} feedback labels counted. Verdict: {server.get('verdict')}", "",
              "![accuracy](accuracy.png)", "", "![latency](latency.png)", ""]
    return "\n".join(lines)


def write_report(out: Path, dataset: str, split: str, labels: Sequence[str], targets: Sequence[int], runs,
                 server_report: dict, counted: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stats = [arm_stats(run, targets) for run in runs]
    pairs = [paired_comparison(runs[0], other, targets) for other in runs[1:]]
    plot_accuracy(stats, out / "accuracy.png")
    plot_latency(runs, out / "latency.png")
    (out / "report.json").write_text(json.dumps(
        {"dataset": dataset, "split": split, "labels": list(labels), "arms": stats, "paired": pairs,
         "feedback_counted": counted, "server_report": server_report}, indent=2))
    path = out / "report.md"
    path.write_text(markdown(dataset, split, stats, pairs, server_report, counted))
    return path
