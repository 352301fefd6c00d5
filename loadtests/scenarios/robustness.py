"""Bad inputs among good ones, and dynamic batching on vs off at equal load."""
from __future__ import annotations

import argparse
from collections import Counter

import httpx

from loadtests.generator import LoadRun, Shot, ShotFactory, run_closed
from loadtests.photos import bad_inputs, digit_pngs
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, digits_config, digits_shots, warm_up
from loadtests.scrape import batch_size_buckets, batch_size_distribution
from loadtests.server import ServerPool
from loadtests.stats import percentile_ms

COLUMNS = ["images_per_s", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors"]


def _mixed(bad_every: int) -> ShotFactory:
    """Every `bad_every`-th request is one of the bad inputs; the others are real digits, tagged by index."""
    pngs, bad = digit_pngs(), list(bad_inputs().items())

    def make(i: int) -> Shot:
        if i % bad_every == bad_every - 1:
            kind, (data, content_type) = bad[(i // bad_every) % len(bad)]
            return Shot("/classify", content=data, headers={"Content-Type": content_type}, params={"model": DIGITS},
                        tag=f"bad:{kind}")
        index = i % len(pngs)
        return Shot("/classify", content=pngs[index], headers={"Content-Type": "image/png"}, params={"model": DIGITS},
                    tag=f"good:{index}")
    return make


class BadInputs(Scenario):
    """bad-inputs: every Nth request is a bad input; bad ones must get their 4xx, good answers stay exactly right."""

    NAME = "bad-inputs"
    HELP = "a share of bad inputs among good ones: bad ones get their 4xx, good answers stay exactly right"
    OPTIONS = {
        "duration": (float, 15, "seconds of load"),
        "concurrency": (int, 8, "closed-loop users (comma-separated where several)"),
        "bad-every": (int, 4, "every Nth request is bad"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server = pool.get(digits_config())
        reference = {}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i, png in enumerate(digit_pngs()):
                reference[f"good:{i}"] = client.post("/classify", content=png, params={"model": DIGITS},
                                                     headers={"Content-Type": "image/png"}).json()["predictions"]
        clean = run_closed(server.url, digits_shots(), args.concurrency, args.duration).summary()
        load = run_closed(server.url, _mixed(args.bad_every), args.concurrency, args.duration, keep_answers=True)
        good = [o for o in load.outcomes if o.tag.startswith("good:")]
        bad = [o for o in load.outcomes if o.tag.startswith("bad:")]
        wrong = sum(1 for o in good if not o.ok or o.answer.get("predictions") != reference[o.tag])
        statuses = {kind: dict(Counter(o.status for o in bad if o.tag == f"bad:{kind}")) for kind in bad_inputs()}
        server_errors = sum(1 for o in load.outcomes if o.status >= 500 or o.status == 0)
        good_only = {**load.summary(), **_good_latency(load)}
        rows = [{"run": "good only", **clean}, {"run": f"1 in {args.bad_every} bad (good answers)", **good_only}]
        results = {"clean": clean, "mixed": load.summary(), "good_answers": len(good), "good_answers_changed": wrong,
                   "bad_statuses": statuses, "server_errors": server_errors}
        plot = plot_bars(args.out, "good_latency.png", {r["run"]: {q: r[q] for q in ("p50_ms", "p95_ms", "p99_ms")}
                                                         for r in rows}, "percentile", "ms", "good requests' latency")
        ok = wrong == 0 and server_errors == 0 and all(all(400 <= s < 500 for s in c) for c in statuses.values())
        write_results(args.out, results, f"""# {cls.NAME}

Model {DIGITS}; closed loop at concurrency {args.concurrency}; every {args.bad_every}th request is bad
(truncated JPEG, text, empty body, SVG). Good answers are compared with answers taken one by one beforehand.

{table(rows, ['run', 'p50_ms', 'p95_ms', 'p99_ms'])}

- good answers: {len(good)}, of which changed or failed: **{wrong}**
- statuses of bad inputs: {statuses}
- 5xx or no answer: **{server_errors}**

![{plot}]({plot})
""")
        return {"scenario": cls.NAME, "figure": f"{len(good)} good answers, {wrong} changed; bad -> "
                f"{sorted({s for c in statuses.values() for s in c})}; {server_errors} 5xx", "ok": ok}


def _good_latency(load: LoadRun) -> dict:
    latencies = [o.latency_s for o in load.outcomes if o.tag.startswith("good:")]
    return {q: percentile_ms(latencies, p) for q, p in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99))}


class Batching(Scenario):
    """batching: dynamic batching on (max_batch_size 16) against off (1) under the same load; batch sizes from /metrics."""

    NAME = "batching"
    HELP = "dynamic batching on (max_batch_size 16) vs off (max_batch_size 1) at equal load"
    OPTIONS = {
        "duration": (float, 12, "seconds of load"),
        "concurrency": (str, "8,32", "closed-loop users (comma-separated where several)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        levels = [int(c) for c in args.concurrency.split(",")]
        make = digits_shots()
        arms = {}
        for label, size in (("on", 16), ("off", 1)):
            server = pool.get(digits_config() if size == 16 else digits_config(max_batch_size=1))
            warm_up(server.url, make)
            before = batch_size_buckets(server.url, DIGITS)
            runs = [run_closed(server.url, make, c, args.duration).summary() for c in levels]
            arms[label] = {"max_batch_size": size, "runs": runs,
                           "batch_sizes": batch_size_distribution(before, batch_size_buckets(server.url, DIGITS))}
        ratios = {str(c): arms["on"]["runs"][i]["requests_per_s"] / arms["off"]["runs"][i]["requests_per_s"]
                  for i, c in enumerate(levels)}
        rows = [{"batching": label, "concurrency": r["level"], **r} for label, arm in arms.items() for r in arm["runs"]]
        plots = [plot_bars(args.out, "throughput.png", {label: {str(r["level"]): r["requests_per_s"] for r in arm["runs"]}
                                                        for label, arm in arms.items()}, "concurrency", "requests/s",
                           "batching on vs off"),
                 plot_bars(args.out, "batch_sizes.png", {label: {k: float(v) for k, v in arm["batch_sizes"].items()}
                                                         for label, arm in arms.items()},
                           "batch size (bucket upper bound)", "batches", "executed batch sizes (from /metrics)")]
        write_results(args.out, {"model": DIGITS, "arms": arms, "throughput_ratio_on_off": ratios}, f"""# {cls.NAME}

Model {DIGITS}; the same closed-loop load against max_batch_size 16 (on) and 1 (off).

{table(rows, ['batching', 'concurrency'] + COLUMNS)}

Throughput ratio on/off by concurrency: {', '.join(f'c={c}: **{r:.2f}**' for c, r in ratios.items())}

Batch sizes (from /metrics): on {arms['on']['batch_sizes']}; off {arms['off']['batch_sizes']}

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        return {"scenario": cls.NAME, "figure": "on/off throughput " + ", ".join(f"c={c}: {r:.2f}x"
                                                                                for c, r in ratios.items()),
                "ok": all(r["errors"] == 0 for arm in arms.values() for r in arm["runs"])}
