"""Concurrency sweep (closed loop) and arrival-rate sweep (open loop) on the digits model, to the knee."""
from __future__ import annotations

import argparse

from loadtests.generator import run_closed
from loadtests.report import plot_load, table, write_results
from loadtests.scenarios.common import DIGITS, closed_sweep, digits_config, digits_shots, open_sweep, warm_up
from loadtests.server import ServerPool
from loadtests.stats import knee

COLUMNS = ["level", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors"]


class ConcurrencySweep:
    NAME = "concurrency-sweep"
    HELP = "closed loop at rising concurrency until throughput stops rising"
    __doc__ = f"{NAME}: {HELP} (model {DIGITS}, single-image requests)."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--duration", type=float, default=8, help="seconds per level")
        parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server = pool.get(digits_config())
        make = digits_shots()
        warm_up(server.url, make)
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


class RateSweep:
    NAME = "rate-sweep"
    HELP = "open loop at rising arrival rates (fractions of measured capacity) past the knee"
    __doc__ = (f"{NAME}: {HELP}. Latency counts from each request's intended send time, so queueing shows. "
               f"Stops early once p99 passes --p99-limit-ms or errors appear.")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--duration", type=float, default=8, help="seconds per rate")
        parser.add_argument("--fractions", default="0.25,0.5,0.7,0.85,1.0,1.15,1.3")
        parser.add_argument("--p99-limit-ms", type=float, default=2000)

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server = pool.get(digits_config())
        make = digits_shots()
        warm_up(server.url, make)
        capacity = run_closed(server.url, make, 16, 5).summary()["requests_per_s"]
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
