"""results.json, report.md with tables, and PNG plots for every scenario."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return "–" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` from each row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out: Path, results: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "report.md").write_text(markdown.rstrip() + "\n")


def plot_load(out: Path, name: str, runs: Sequence[dict[str, Any]], xlabel: str, title: str,
              throughput_key: str = "images_per_s", reference: float | None = None,
              reference_label: str = "") -> str:
    """Throughput and p50/p95/p99 latency against load; returns the file name."""
    xs = [r["level"] for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(xs, [r[throughput_key] for r in runs], "o-", label="server")
    if reference is not None:
        ax1.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax1.set(xlabel=xlabel, ylabel=throughput_key.replace("_", " "), title="throughput")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        ax2.plot(xs, [r[q] for r in runs], "o-", label=q.split("_")[0])
    ax2.set(xlabel=xlabel, ylabel="latency (ms)", title="latency")
    ax2.set_ylim(bottom=0)
    ax2.legend()
    for ax in (ax1, ax2):
        if len(xs) > 2 and max(xs) / max(min(xs), 1e-9) > 10:
            ax.set_xscale("log", base=2)
    fig.suptitle(title)
    return _save(fig, out, name)


def plot_series(out: Path, name: str, series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str,
                ylabel: str, title: str, marks: dict[str, float] | None = None) -> str:
    """Lines over time (memory per process, throughput per second), with optional event marks."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    for label, x in (marks or {}).items():
        ax.axvline(x, color="red", linestyle="--")
        ax.text(x, ax.get_ylim()[1] * 0.95, f" {label}", color="red", va="top")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    if len(series) > 1:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out, name)


def plot_bars(out: Path, name: str, groups: dict[str, dict[str, float]], xlabel: str, ylabel: str,
              title: str) -> str:
    """Side-by-side bars: one group per key (e.g. batching on/off), one bar per category."""
    fig, ax = plt.subplots(figsize=(9, 4))
    categories = sorted({c for g in groups.values() for c in g}, key=_numeric_first)
    width = 0.8 / max(len(groups), 1)
    for i, (label, values) in enumerate(groups.items()):
        ax.bar([j + i * width for j in range(len(categories))], [values.get(c, 0) for c in categories], width,
               label=label)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(categories))], categories)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    return _save(fig, out, name)


def _save(fig: plt.Figure, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=80)
    plt.close(fig)
    return name


def _numeric_first(text: str) -> tuple[float, str]:
    try:
        return (float(text), text)
    except ValueError:
        return (float("inf"), text)
