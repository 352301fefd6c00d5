"""proxy: the two front doors of `http.proxy` under the same load, where the serving path shows most."""
from __future__ import annotations

import argparse

from loadtests.generator import run_closed
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, digits_config, digits_shots, warm_up
from loadtests.server import ServerPool

COLUMNS = ["proxy", "level", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors"]


class FrontDoor(Scenario):
    """proxy: HAProxy (Ray Serve's high-throughput mode) against Ray Serve's Python proxy, on the digits
    model, whose ~1 ms inference leaves the serving path (HTTP, hops, decode, JSON) as the cost measured."""

    NAME = "proxy"
    HELP = "http.proxy haproxy vs ray at equal load on the digits model"
    OPTIONS = {
        "duration": (float, 10, "seconds per level"),
        "concurrency": (str, "1,8,32", "closed-loop users (comma-separated where several)"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        levels = [int(c) for c in args.concurrency.split(",")]
        make = digits_shots()
        doors: dict[str, list[dict]] = {}
        for proxy in ("haproxy", "ray"):
            config = digits_config()
            config["http"]["proxy"] = proxy
            server = pool.get(config)
            warm_up(server.url, make)
            doors[proxy] = [run_closed(server.url, make, c, args.duration).summary() for c in levels]
        speedup = {str(c): doors["haproxy"][i]["requests_per_s"] / doors["ray"][i]["requests_per_s"]
                   for i, c in enumerate(levels)}
        p50_at_1 = {proxy: runs[0]["p50_ms"] for proxy, runs in doors.items()}
        rows = [{"proxy": proxy, **r} for proxy, runs in doors.items() for r in runs]
        plots = [plot_bars(args.out, "throughput.png", {p: {str(r["level"]): r["requests_per_s"] for r in runs}
                                                        for p, runs in doors.items()},
                           "concurrency", "requests/s", "throughput by front door"),
                 plot_bars(args.out, "p50.png", {p: {str(r["level"]): r["p50_ms"] for r in runs}
                                                 for p, runs in doors.items()},
                           "concurrency", "p50 latency (ms)", "median latency by front door")]
        results = {"model": DIGITS, "runs": doors, "throughput_ratio_haproxy_ray": speedup}
        write_results(args.out, results, f"""# {cls.NAME}

Model {DIGITS} (about 1 ms of inference), one PNG per request, closed loop, {args.duration:g} s per level;
the load generator shares the machine's cores. `haproxy`: HAProxy forwards to the ingress replica, which
serves HTTP itself, and calls the classifier over gRPC. `ray`: Ray Serve's Python proxy, then the ingress,
then the classifier, over Ray actor calls.

{table(rows, COLUMNS)}

Throughput haproxy/ray: {', '.join(f'c={c}: **{r:.2f}x**' for c, r in speedup.items())}

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        return {"scenario": cls.NAME, "figure": "haproxy/ray throughput " + ", ".join(
                    f"c={c}: {r:.2f}x" for c, r in speedup.items())
                + f"; p50 at c={levels[0]} {p50_at_1['haproxy']:.1f} vs {p50_at_1['ray']:.1f} ms",
                "ok": all(r["errors"] == 0 for runs in doors.values() for r in runs)}
