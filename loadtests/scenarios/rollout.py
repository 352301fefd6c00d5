"""rollout: two guarded rollouts against one live server with two ingress replicas, under load with feedback.

First a challenger whose labels are rotated by one class (the baseline's weights, so it answers as fast, but
wrong almost always): it must be rolled back. Then the baseline's twin under another name: it must reach 100%.
Clients send sklearn digits with random X-User-Id values and post each answer's true label as feedback. A
timeline per rollout: the challenger's weight as /ab/report gave it, accuracy and p95 latency per arm as the
clients saw them (2 s bins), and every decision."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from loadtests.report import plt, table, write_results
from loadtests.rollout import (BASELINE, PLAN, ROTATED, TWIN, RolloutRun, drive_rollout, rollout_config,
                               rollout_experiment, rollout_repository)
from loadtests.scenarios.common import Scenario
from loadtests.server import ServerPool

BIN_S = 2.0
COLOURS = {"advance": "tab:green", "complete": "tab:blue", "rollback": "tab:red"}


def plot_timeline(out: Path, name: str, run: RolloutRun, title: str) -> str:
    t0 = run.started
    fig, (weight, accuracy, latency) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    weight.step([t - t0 for t, _, _ in run.looks], [w for _, w, _ in run.looks], where="post", color="k")
    weight.set_ylabel("challenger weight %")
    weight.set_ylim(-5, 105)
    answered = [a for a in run.answers if a[2]]
    end = max((a[0] for a in answered), default=t0) - t0
    edges = np.arange(0, end + BIN_S, BIN_S)
    for arm in sorted({a[2] for a in answered}):
        mine = [a for a in answered if a[2] == arm]
        xs, acc, p95 = [], [], []
        for lo in edges:
            inside = [a for a in mine if lo <= a[0] - t0 < lo + BIN_S]
            if len(inside) >= 3:
                xs.append(lo + BIN_S / 2)
                acc.append(np.mean([a[3] for a in inside]))
                p95.append(1e3 * float(np.quantile([a[4] for a in inside], 0.95)))
        accuracy.plot(xs, acc, ".-", label=arm)
        latency.plot(xs, p95, ".-", label=arm)
    accuracy.set_ylabel(f"accuracy ({BIN_S:g} s bins)")
    accuracy.set_ylim(-0.05, 1.05)
    accuracy.legend(loc="center left", fontsize=8)
    latency.set_ylabel("client p95 ms")
    latency.set_xlabel("seconds since the load began")
    for d in run.rollout.get("decisions", []):
        for axis in (weight, accuracy, latency):
            axis.axvline(d["decided_at"] - t0, color=COLOURS[d["action"]], linestyle="--", linewidth=1)
        weight.annotate(f"{d['action']} -> {d['weight']:g}%", (d["decided_at"] - t0, 50), rotation=90,
                        fontsize=8, color=COLOURS[d["action"]], ha="right")
    fig.suptitle(title)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=80)
    plt.close(fig)
    return name


def summarise(run: RolloutRun) -> dict:
    rollout = run.rollout
    decisions = rollout.get("decisions", [])
    statuses = [a[1] for a in run.answers]
    return {"status": rollout.get("status"), "seconds_to_conclusion":
            decisions[-1]["decided_at"] - rollout["started_at"] if decisions and rollout.get("status") != "running"
            else None,
            "requests": len(statuses), "non_200": sum(s != 200 for s in statuses),
            "decisions": [{"step": d["step"], "action": d["action"], "weight": d["weight"],
                           "after_s": d["decided_at"] - rollout["started_at"], "reason": d["reason"]}
                          for d in decisions],
            "latest_hold": rollout.get("latest_hold")}


class Rollout(Scenario):
    NAME = "rollout"
    HELP = "a wrong challenger rolled back and a good one taken to 100%%, live, two ingress replicas"
    OPTIONS = {"clients": (int, 4, "closed-loop clients, each classify then feedback"),
               "timeout": (float, 180, "seconds each rollout may take")}

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        repository = rollout_repository(pool.workdir / "rollout-models")
        server = pool.get(rollout_config(repository, rollout_experiment("rollout-rotated", ROTATED)))
        runs: dict[str, RolloutRun] = {}
        for experiment, challenger in (("rollout-rotated", ROTATED), ("rollout-twin", TWIN)):
            if experiment != "rollout-rotated":
                server.reload({**server.config, "experiment": rollout_experiment(experiment, challenger)})
            runs[challenger] = drive_rollout(server.url, timeout_s=args.timeout, clients=args.clients)
        results = {name: summarise(run) for name, run in runs.items()}
        plots = {name: plot_timeline(args.out, f"timeline_{name.rsplit('_', 1)[1]}.png", run,
                                     f"{name} against {BASELINE}: {results[name]['status']}")
                 for name, run in runs.items()}
        sections = []
        for name, summary in results.items():
            rows = [{**d, "reason": d["reason"].replace("|", "/")} for d in summary["decisions"]]
            sections.append(f"""## {name}

{summary['status']} after {summary['seconds_to_conclusion']:.1f} s; {summary['requests']} requests, \
{summary['non_200']} not 200.

{table(rows, ['step', 'action', 'weight', 'after_s', 'reason'])}

Latest hold: {(summary['latest_hold'] or {}).get('reason', '–')}

![{plots[name]}]({plots[name]})

""")
        plan = dict(PLAN)
        write_results(args.out, {"plan": plan, "rollouts": results}, f"""# {cls.NAME}

`python -m loadtests rollout`: one server, two ingress replicas, models {BASELINE} (baseline), {ROTATED} (its
labels rotated by one class: answers wrong) and {TWIN} (identical weights), half a CPU each, {args.clients}
clients sending digits with random `X-User-Id` and posting each answer's true label. Plan: {plan}, alpha 0.05,
max error rate 1%.

{''.join(sections)}""")
        ok = (results[ROTATED]["status"] == "rolled_back" and results[TWIN]["status"] == "completed"
              and all(r["non_200"] == 0 for r in results.values()))
        figure = ", ".join(f"{n}: {r['status']} in {r['seconds_to_conclusion'] or float('nan'):.0f} s"
                           for n, r in results.items())
        return {"scenario": cls.NAME, "figure": figure, "ok": ok}
