"""slow-clients: normal traffic with and without hundreds of slow attackers (issue 17)."""
from __future__ import annotations

import argparse
import time

from loadtests.generator import run_closed
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import Scenario, digits_config, digits_shots, warm_up
from loadtests.server import ServerPool
from loadtests.slow_clients import Attack, Stalled
from loadtests.stats import percentile_ms
from serve.config import HttpOptions

COLUMNS = ["phase", "requests_per_s", "p50_ms", "p99_ms", "max_ms", "errors", "server_rss_mb"]
STALL_COLUMNS = ["kind", "connections", "answered_408", "answered_429", "closed_by_server", "closed_p50_s",
                 "closed_p99_s", "closed_max_s"]
ATTACKER_SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def _stall_row(kind: str, stalls: list[Stalled]) -> dict:
    closed = [s.held_s for s in stalls if s.closed]
    return {"kind": kind, "connections": len(stalls), "answered_408": sum(s.status == 408 for s in stalls),
            "answered_429": sum(s.status == 429 for s in stalls), "closed_by_server": len(closed),
            **{f"closed_{p}_s": percentile_ms(closed, q) / 1000 if closed else None
               for p, q in (("p50", 50), ("p99", 99), ("max", 100))}}


def _sentence(text: str) -> str:
    words = " ".join(text.split())
    return words[:1].upper() + words[1:]


class SlowClients(Scenario):
    """slow-clients: the digits model under a closed loop of normal users from 127.0.0.1, first alone, then
    while persistent attackers from four other loopback addresses hold slow bodies (headers, 4 of 100,000
    bytes, then nothing), unfinished headers and unread answers open, reconnecting as each is closed (at most
    `--connect-rate` new connections a second, as slowloris tools pace them). The server runs the shipped
    slow-client limits, with the per-client limit applied to loopback addresses too (limit_loopback)."""

    NAME = "slow-clients"
    HELP = "normal throughput and p99 with and without hundreds of slow attackers; how fast stalls are cut"
    OPTIONS = {
        "duration": (float, 30, "seconds of normal traffic per phase"),
        "concurrency": (int, 8, "normal closed-loop users"),
        "bodies": (int, 300, "slow-body attackers"),
        "headers": (int, 50, "slow-header attackers"),
        "readers": (int, 20, "attackers that never read their answers"),
        "connect-rate": (float, 50, "new attacker connections per second, in all"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        config = digits_config()
        config["http"].update(limit_loopback=True)
        server = pool.get(config)
        make = digits_shots()
        warm_up(server.url, make)
        alone = run_closed(server.url, make, args.concurrency, args.duration).summary()
        alone["server_rss_mb"] = server.rss_mb()
        counts = {"body": args.bodies, "header": args.headers, "reader": args.readers}
        ramp_s = sum(counts.values()) / args.connect_rate + 2
        attack = Attack(server.port, counts, ramp_s + args.duration + 5, ATTACKER_SOURCES,
                        rate_per_s=args.connect_rate)
        with attack:
            time.sleep(ramp_s)  # every attacker connected once before normal traffic is measured
            attacked = run_closed(server.url, make, args.concurrency, args.duration).summary()
            attacked["server_rss_mb"] = server.rss_mb()
        phases = [{"phase": "alone", **alone}, {"phase": "under attack", **attacked}]
        stalls = [_stall_row(kind, attack.of(kind)) for kind in counts]
        ratio = attacked["requests_per_s"] / alone["requests_per_s"]
        http = HttpOptions(**server.config["http"])
        plots = [plot_bars(args.out, "normal.png", {p["phase"]: {"requests/s": p["requests_per_s"],
                                                                 "p99 ms / 10": p["p99_ms"] / 10}
                                                    for p in phases},
                           "", "value", "normal traffic alone and under attack")]
        write_results(args.out, {"phases": phases, "stalls": stalls, "throughput_ratio": ratio, "args": vars(args)
                                 | {"out": str(args.out)}}, f"""# {cls.NAME}

{_sentence(cls.__doc__.split(":", 1)[1])}

Normal traffic: {args.concurrency} closed-loop users, {args.duration:g} s per phase. Attack: {args.bodies} slow
bodies, {args.headers} slow headers, {args.readers} non-readers, from {len(ATTACKER_SOURCES)} addresses, at most
{args.connect_rate:g} new connections/s. Limits (the shipped defaults): body grace {http.body_timeout_s:g} s, idle
{http.body_idle_timeout_s:g} s, at least {http.body_min_rate_bytes_per_s} bytes/s; {http.max_inflight_per_client} requests
in flight per client address; keep-alive {http.keep_alive_timeout_s} s; front door `{http.proxy}`.

{table(phases, COLUMNS)}

Throughput under attack / alone: **{ratio:.2f}** (target >= 0.8, no errors).

Stalled connections (closed_*: seconds from the attacker's last byte until the server closed the connection;
readers read nothing until 2 s before the end, so theirs only say whether the server had closed by then):

{table(stalls, STALL_COLUMNS)}

Slow headers behind Ray's proxy are not closed (uvicorn has no header timeout; they hold a socket, no slot);
behind HAProxy `timeout client` closes them. See docs/ARCHITECTURE.md, "Slow clients".

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        body = stalls[0]
        return {"scenario": cls.NAME,
                "figure": f"{args.bodies + args.headers + args.readers} attackers: {ratio:.2f}x throughput "
                          f"({attacked['requests_per_s']:.0f} vs {alone['requests_per_s']:.0f} req/s), p99 "
                          f"{attacked['p99_ms']:.0f} vs {alone['p99_ms']:.0f} ms, {attacked['errors']} errors; "
                          f"slow bodies closed p99 {body['closed_p99_s'] or 0:.1f} s",
                "ok": ratio >= 0.8 and attacked["errors"] == 0}
