"""Concurrency sweep (closed loop) and arrival-rate sweep (open loop) on the digits model, to the knee."""
from __future__ import annotations

import argparse

from loadtests.report import plot_load, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, capacity_per_s, closed_sweep, open_sweep, warm_digits_server
from loadtests.server import ServerPool
from loadtests.stats import knee

COLUMNS = ["level", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors"]


class ConcurrencySweep(Scenario):
    """concurrency-sweep: closed loop at rising concurrency until throughput stops rising (the knee)."""

    NAME = "concurrency-sweep"
    HELP = "closed loop at rising concurrency until throughput stops rising"
    OPTIONS = {
        "duration": (float, 8, "seconds per level"),
        "concurrency": (str, "1,2,4,8,16,32,64", "closed-loop users (comma-separated where several)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server, make = warm_digits_server(pool)
        levels = [int(c) for c in args.concurrency.split(",")]
        runs = [r.summary() for r in closed_sweep(server.url, make, levels, args.duration, cls.NAME)]
        at_knee = knee([r["level"] for r in runs], [r["requests_per_s"] for r in runs])
        peak = max(runs, key=lambda r: r["requests_per_s"])
        results = {"model": DIGITS, "runs": runs, "knee_concurrency": at_knee, "peak": peak}
        plot = plot_load(args.out, "throughput_latency.png", runs, "concurrency (closed loop)", cls.NAME,
                         throughput_key="requests_per_s")
        write_results(args.out, results, f"""# {cls.NAME}

Model {DIGITS}, one image per request, closed loop, {args.duration:g} s per level.

{table(runs, COLUMNS)}

Knee (more concurrency adds < 5 % throughput): concurrency **{at_knee}**; peak {peak['requests_per_s']:.1f}
requests/s at concurrency {peak['level']}.

![{plot}]({plot})
""")
        return {"scenario": cls.NAME, "figure": f"peak {peak['requests_per_s']:.0f} req/s at c={peak['level']}, "
                f"knee at c={at_knee}", "ok": sum(r["errors"] for r in runs) == 0}


class RateSweep(Scenario):
    """rate-sweep: open loop at rising arrival rates, as fractions of measured capacity, past the knee.

    Latency counts from each request's intended send time, so queueing shows; the sweep stops once p99
    passes --p99-limit-ms or errors appear."""

    NAME = "rate-sweep"
    HELP = "open loop at rising arrival rates (fractions of measured capacity) past the knee"
    OPTIONS = {
        "duration": (float, 8, "seconds per rate"),
        "fractions": (str, "0.25,0.5,0.7,0.85,1.0,1.15,1.3", "offered rates as fractions of measured capacity"),
        "p99-limit-ms": (float, 2000, "p99 beyond which the sweep has passed the knee"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server, make = warm_digits_server(pool)
        capacity = capacity_per_s(server.url, make)
        rates = [round(capacity * float(f), 1) for f in args.fractions.split(",")]
        past_knee = lambda s: s["errors"] > 0 or (s["p99_ms"] or 0) > args.p99_limit_ms  # noqa: E731
        runs = [r.summary() for r in open_sweep(server.url, make, rates, args.duration, cls.NAME, past_knee)]
        for r in runs:
            r["offered_per_s"] = r["level"]
        sustained = [r["level"] for r in runs if r["errors"] == 0 and r["requests_per_s"] >= 0.95 * r["level"]
                     and (r["p99_ms"] or 0) <= args.p99_limit_ms]
        at_knee = max(sustained, default=None)
        results = {"model": DIGITS, "closed_loop_capacity_per_s": capacity, "runs": runs,
                   "knee_rate_per_s": at_knee}
        plot = plot_load(args.out, "throughput_latency.png", runs, "offered requests/s (open loop)", cls.NAME,
                         throughput_key="requests_per_s")
        write_results(args.out, results, f"""# {cls.NAME}

Model {DIGITS}; closed-loop capacity (c=16) {capacity:.1f} requests/s; open loop, {args.duration:g} s per rate.
Latency from the intended send time.

{table(runs, ['offered_per_s'] + COLUMNS[1:])}

Knee (highest rate served in full, no errors, p99 ≤ {args.p99_limit_ms:g} ms): **{at_knee} requests/s**.

![{plot}]({plot})
""")
        return {"scenario": cls.NAME, "figure": f"knee at {at_knee} req/s offered (closed-loop capacity "
                f"{capacity:.0f})", "ok": at_knee is not None}
