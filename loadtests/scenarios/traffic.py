"""Traffic shapes on the digits models: multi-image requests, a mixed-model workload, A/B traffic."""
from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter

import httpx
from sklearn.datasets import load_digits

from loadtests.generator import Outcome, Shot, ShotFactory, run_closed
from loadtests.photos import digit_pngs
from loadtests.postgres import PostgresServer, temporary_postgres
from loadtests.cpu import CpuMeter
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
    """Requests from `count` users cycling through the digits; the tag says who sent which image."""
    pngs = digit_pngs()

    def make(i: int) -> Shot:
        user = f"user-{i % count}"
        return Shot("/classify", content=pngs[i % len(pngs)], headers={"Content-Type": "image/png", "X-User-Id": user},
                    tag=f"{user} {i % len(pngs)}")
    return make


def _labels_for(answered: list[Outcome]) -> ShotFactory:
    """POST /feedback with the true digit of every answered request."""
    truth = load_digits().target

    def make(i: int) -> Shot:
        image = int(answered[i].tag.split()[1])
        body = {"request_id": answered[i].answer["request_id"], "label": int(truth[image])}
        return Shot("/feedback", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return make


class AbTraffic(Scenario):
    """ab: traffic from many X-User-Id values with no `model=`, so the A/B experiment routes it; then the true
    label of every answer is sent to /feedback, and /ab/report, read several times, must count every 200 once
    and every counted label once. Stickiness is checked from the answers' `arm`.

    One run per `--runs` entry `store:ingress replicas`, each on a server of its own: the shipped SQLite with
    one Ingress replica, and a PostgreSQL (started here, as the tests do) shared by two Ingress replicas, the
    Kubernetes shape. Both replicas' CPU time during the load shows that both took requests."""

    NAME = "ab"
    HELP = "A/B traffic and labels through the experiment; arms, stickiness, report totals; SQLite and PostgreSQL"
    OPTIONS = {
        "duration": (float, 15, "seconds of load"),
        "concurrency": (int, 16, "closed-loop users (comma-separated where several)"),
        "users": (int, 200, "distinct X-User-Id values"),
        "runs": (str, "sqlite:1,postgresql:2", "store:ingress replicas per run, comma-separated"),
        "reports": (int, 4, "times /ab/report is read after the labels (each may reach another replica)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        runs = [(store, int(replicas)) for store, replicas in (r.split(":") for r in args.runs.split(","))]
        with contextlib.ExitStack() as stack:
            postgres = (stack.enter_context(temporary_postgres()) if any(s == "postgresql" for s, _ in runs)
                        else None)
            results = [cls.one_run(args, pool, store, replicas, postgres) for store, replicas in runs]
            pool.close()  # before the database goes
        sections = []
        for r in results:
            plot = plot_bars(args.out, f"arms-{r['store']}.png", {"answers": {k: float(v) for k, v in
                                                                                r["arms"].items()}},
                             "arm", "answers", f"{cls.NAME} ({r['store']}, {r['ingress_replicas']} ingress): answers per arm")
            rows = [{"arm": k, "answers": v, "share": v / max(sum(r["arms"].values()), 1),
                     **r["report_arms"].get(k, {})} for k, v in sorted(r["arms"].items())]
            sections.append(f"""## {r['store']}, {r['ingress_replicas']} Ingress replica(s)

{table([r['summary']], COLUMNS)}

{table(rows, ['arm', 'answers', 'share', 'requests', 'feedback', 'accuracy'])}

`answers` are the 200s the clients saw, `requests` and `feedback` what `/ab/report` counts. Every 200 counted
once: **{r['answered']} answered, {r['report_requests']} in the report**; labels acknowledged as counted:
**{r['labels_counted']}** of {r['labels_sent']} sent, {r['report_feedback']} in the report; the report read
{args.reports} times gave {r['distinct_reports']} distinct totals (1: every replica agrees). Users seen:
{r['users']}; users who saw more than one arm: **{r['users_seeing_two_arms']}** (sticky: 0). CPU seconds of
each Ingress replica during the load: {r['ingress_cpu_s']}, during the labels: {r['labels_cpu_s']} (every
replica took both). Durable answers: {r['durable']}.

![{plot}]({plot})
""")
        write_results(args.out, {"runs": results}, f"""# {cls.NAME}

{args.users} users (X-User-Id), closed loop at concurrency {args.concurrency}, {args.duration:g} s, no `model=`;
then the true label of every answer to `/feedback` (same concurrency), then `/ab/report` read {args.reports} times.
PostgreSQL: Debian's, started by the scenario (`loadtests/postgres.py`).

""" + "\n".join(sections))
        figure = "; ".join(f"{r['store']} x{r['ingress_replicas']}: {r['answered']} answered/{r['report_requests']} "
                           f"reported, {r['labels_counted']}/{r['report_feedback']} labels, "
                           f"{r['users_seeing_two_arms']} switched arm" for r in results)
        return {"scenario": cls.NAME, "figure": figure, "ok": all(r["ok"] for r in results)}

    @classmethod
    def one_run(cls, args: argparse.Namespace, pool: ServerPool, store: str, replicas: int,
                postgres: PostgresServer | None) -> dict:
        config = digits_config()
        config["ingress"] = {"replicas": replicas}
        if store == "postgresql":
            assert postgres is not None
            config["feedback"] = {**config.get("feedback", {}), "url": postgres.fresh_database(f"ab_{replicas}")}
        elif store != "sqlite":
            raise ValueError(f"unknown store {store!r}: sqlite or postgresql")
        server = pool.get(config)
        replicas_cpu = CpuMeter(server.replica_pids("Ingress"))
        load = run_closed(server.url, _users(args.users), args.concurrency, args.duration, keep_answers=True)
        ingress_cpu = replicas_cpu.since()
        answered = [o for o in load.outcomes if o.ok and o.answer]
        labels = run_closed(server.url, _labels_for(answered), args.concurrency, 600, max_requests=len(answered),
                            keep_answers=True)
        labels_cpu = replicas_cpu.since()
        counted = sum(1 for o in labels.outcomes if o.ok and o.answer and o.answer.get("counted"))
        reports = [httpx.get(f"{server.url}/ab/report", timeout=60).json() for _ in range(args.reports)]
        totals = {(sum(a["requests"] for a in r["arms"]), sum(a["feedback"] for a in r["arms"])) for r in reports}
        report_requests, report_feedback = max(totals)
        arms = Counter(str(o.answer.get("arm")) for o in answered)
        by_user: dict[str, set[str]] = {}
        for o in answered:
            by_user.setdefault(o.tag.split()[0], set()).add(str(o.answer.get("arm")))
        unsticky = sorted(u for u, a in by_user.items() if len(a) > 1)
        summary = load.summary()
        used = min(sum(1 for cpu in ingress_cpu if cpu > 0.5), sum(1 for cpu in labels_cpu if cpu > 0.5))
        ok = (summary["errors"] == 0 and not unsticky and len(totals) == 1 and report_requests == len(answered)
              and counted == len(answered) == report_feedback and used == replicas)
        return {"store": store, "ingress_replicas": replicas, "summary": summary, "arms": dict(arms),
                "answered": len(answered), "labels_sent": len(labels.outcomes), "labels_counted": counted,
                "report_requests": report_requests, "report_feedback": report_feedback,
                "distinct_reports": len(totals), "report_arms": {a["arm"]: {k: a[k] for k in
                                                                           ("requests", "feedback", "accuracy")}
                                                                for a in reports[-1]["arms"]},
                "users": len(by_user), "users_seeing_two_arms": len(unsticky), "ingress_cpu_s": ingress_cpu, "labels_cpu_s": labels_cpu,
                "durable": store != "sqlite", "ok": ok}  # feedback.durable_answers' default by store
