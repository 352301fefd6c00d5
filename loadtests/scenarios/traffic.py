"""Traffic shapes on the digits models: multi-image requests, a mixed-model workload, A/B traffic."""
from __future__ import annotations

import argparse
from collections import Counter

from loadtests.generator import Shot, ShotFactory, run_closed
from loadtests.photos import digit_pngs
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, digits_config, multipart_shots, warm_up
from loadtests.server import ServerPool

COLUMNS = ["images_per_s", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors"]


class MultiImage(Scenario):
    """multi-image: images/s as one multipart request carries 1, 4, 8 or 16 images, at equal concurrency."""

    NAME = "multi-image"
    HELP = "images/s as one request carries 1, 4, 8 or 16 images (multipart), equal concurrency"
    OPTIONS = {
        "duration": (float, 8, "seconds per request size"),
        "images": (str, "1,4,8,16", "images per request"),
        "concurrency": (int, 8, "closed-loop users (comma-separated where several)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server = pool.get(digits_config())
        sizes = [int(n) for n in args.images.split(",")]
        warm_up(server.url, multipart_shots(digit_pngs(), sizes[-1], model=DIGITS))
        runs = []
        for n in sizes:
            summary = run_closed(server.url, multipart_shots(digit_pngs(), n, model=DIGITS), args.concurrency,
                                 args.duration).summary()
            runs.append({"images_per_request": n, **summary})
        base = runs[0]["images_per_s"] or float("nan")
        for r in runs:
            r["speedup"] = r["images_per_s"] / base
        plot = plot_bars(args.out, "images_per_s.png", {"images/s": {str(r["images_per_request"]): r["images_per_s"]
                                                                     for r in runs}},
                         "images per request", "images/s", f"{cls.NAME} (c={args.concurrency})")
        write_results(args.out, {"model": DIGITS, "concurrency": args.concurrency, "runs": runs}, f"""# {cls.NAME}

Model {DIGITS}; closed loop at concurrency {args.concurrency}; multipart requests with several `file` parts.

{table(runs, ['images_per_request', 'speedup'] + COLUMNS)}

![{plot}]({plot})
""")
        best = max(runs, key=lambda r: r["images_per_s"])
        return {"scenario": cls.NAME, "figure": f"{best['images_per_s']:.0f} img/s at {best['images_per_request']} "
                f"images/request ({best['speedup']:.1f}x single)", "ok": sum(r["errors"] for r in runs) == 0}


def _alternating(models: list[str]) -> ShotFactory:
    pngs = digit_pngs()

    def make(i: int) -> Shot:
        model = models[i % len(models)]
        return Shot("/classify", content=pngs[i % len(pngs)], headers={"Content-Type": "image/png"},
                    params={"model": model}, tag=model)
    return make


class MixedModels(Scenario):
    """mixed-models: both digits models at once, requests alternating, with per-model figures."""

    NAME = "mixed-models"
    HELP = "both digits models at once, alternating requests, per-model figures"
    OPTIONS = {
        "duration": (float, 15, "seconds of load"),
        "concurrency": (int, 16, "closed-loop users (comma-separated where several)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        config = digits_config()
        models = [m["name"] for m in config["models"]]
        server = pool.get(config)
        make = _alternating(models)
        warm_up(server.url, make)
        load = run_closed(server.url, make, args.concurrency, args.duration)
        rows = [{"model": "all", **load.summary()}] + [{"model": m, **load.summary(tag=m)} for m in models]
        plot = plot_bars(args.out, "per_model.png", {q: {r["model"]: r[q] for r in rows} for q in
                         ("p50_ms", "p95_ms", "p99_ms")}, "model", "latency (ms)", f"{cls.NAME} (c={args.concurrency})")
        write_results(args.out, {"concurrency": args.concurrency, "runs": rows}, f"""# {cls.NAME}

Requests alternate between {', '.join(models)}; closed loop at concurrency {args.concurrency}.

{table(rows, ['model'] + COLUMNS)}

![{plot}]({plot})
""")
        return {"scenario": cls.NAME, "figure": f"{rows[0]['requests_per_s']:.0f} req/s over {len(models)} models, "
                f"p99 {rows[0]['p99_ms']:.0f} ms", "ok": rows[0]["errors"] == 0}


def _users(count: int) -> ShotFactory:
    pngs = digit_pngs()

    def make(i: int) -> Shot:
        user = f"user-{i % count}"
        return Shot("/classify", content=pngs[i % len(pngs)], headers={"Content-Type": "image/png", "X-User-Id": user},
                    tag=user)
    return make


class AbTraffic(Scenario):
    """ab: traffic from many X-User-Id values with no `model=`, so the A/B experiment routes it.

    Answers' `arm` is tallied (None without an experiment in the config) and stickiness is checked."""

    NAME = "ab"
    HELP = "traffic from many X-User-Id values through the A/B experiment; arms tallied, stickiness checked"
    OPTIONS = {
        "duration": (float, 15, "seconds of load"),
        "concurrency": (int, 16, "closed-loop users (comma-separated where several)"),
        "users": (int, 200, "distinct X-User-Id values"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server = pool.get(digits_config())
        make = _users(args.users)
        load = run_closed(server.url, make, args.concurrency, args.duration, keep_answers=True)
        answered = [o for o in load.outcomes if o.ok and o.answer]
        arms = Counter(str(o.answer.get("arm")) for o in answered)
        served = Counter(f"{o.answer['model']['name']}/{o.answer['model']['version']}" for o in answered)
        by_user: dict[str, set[str]] = {}
        for o in answered:
            by_user.setdefault(o.tag, set()).add(str(o.answer.get("arm")))
        unsticky = sorted(u for u, a in by_user.items() if len(a) > 1)
        summary = load.summary()
        results = {"summary": summary, "arms": dict(arms), "models": dict(served), "users": len(by_user),
                   "users_seeing_two_arms": len(unsticky)}
        plot = plot_bars(args.out, "arms.png", {"answers": {k: float(v) for k, v in arms.items()}}, "arm", "answers",
                         f"{cls.NAME}: answers per arm")
        rows = [{"arm": k, "answers": v, "share": v / max(len(answered), 1)} for k, v in sorted(arms.items())]
        write_results(args.out, results, f"""# {cls.NAME}

{args.users} users (X-User-Id), closed loop at concurrency {args.concurrency}, {args.duration:g} s, no `model=`.

{table([summary], COLUMNS)}

{table(rows, ['arm', 'answers', 'share'])}

Models that answered: {dict(served)}. Users seen: {len(by_user)}; users who saw more than one arm: **{len(unsticky)}**
(the assignment must be sticky: 0).

![{plot}]({plot})
""")
        return {"scenario": cls.NAME, "figure": f"arms {dict(arms)}, {len(unsticky)} users switched arm",
                "ok": summary["errors"] == 0 and not unsticky}
