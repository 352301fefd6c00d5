"""slow-clients: normal traffic with and without hundreds of slow attackers (issue 17)."""
from __future__ import annotations

import argparse
import subprocess
import time

from loadtests.generator import run_closed
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import Scenario, digits_config, digits_shots, warm_up
from loadtests.server import ROOT, ServerPool
from loadtests.slow_clients import Attack, Stalled
from loadtests.stats import percentile_ms
from serve.config import HttpOptions

COLUMNS = ["proxy", "phase", "requests_per_s", "p50_ms", "p99_ms", "max_ms", "errors", "server_rss_mb"]
STALL_COLUMNS = ["proxy", "kind", "connections", "refused_on_accept", "answered_408", "answered_429",
                 "closed_by_server", "closed_p50_s", "closed_p99_s", "closed_max_s"]
ATTACKER_SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
PROXIES = ("ray", "haproxy")
REFUSED_WITHIN_S = 1.0  # closed this soon with no answer: refused as it was accepted (the per-address limit)


def _refused(s: Stalled) -> bool:
    return s.closed and s.status == 0 and s.held_s < REFUSED_WITHIN_S


def _stall_row(proxy: str, kind: str, stalls: list[Stalled]) -> dict:
    """closed_*: over the connections the server admitted and later closed (refusals on accept apart)."""
    closed = [s.held_s for s in stalls if s.closed and not _refused(s)]
    return {"proxy": proxy, "kind": kind, "connections": len(stalls), "refused_on_accept": sum(map(_refused, stalls)),
            "answered_408": sum(s.status == 408 for s in stalls),
            "answered_429": sum(s.status == 429 for s in stalls), "closed_by_server": len(closed),
            **{f"closed_{p}_s": percentile_ms(closed, q) / 1000 if closed else None
               for p, q in (("p50", 50), ("p99", 99), ("max", 100))}}


def _sentence(text: str) -> str:
    words = " ".join(text.split())
    return words[:1].upper() + words[1:]


def _commit() -> str:
    """The commit the server ran, `-dirty` when the working tree (shared with other work) had changes to it."""
    described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=ROOT, text=True,
                               capture_output=True)
    return described.stdout.strip() or "unknown"


class SlowClients(Scenario):
    """slow-clients: the digits model under a closed loop of normal users from 127.0.0.1, first alone, then
    while persistent attackers from four other loopback addresses hold slow bodies (headers, 4 of 100,000
    bytes, then nothing), unfinished headers and unread answers open, reconnecting as each is closed (at most
    `--connect-rate` new connections a second, as slowloris tools pace them). The server runs the shipped
    slow-client limits, with the per-address limits applied to loopback addresses too (limit_loopback), behind
    each front door of `--proxy`."""

    NAME = "slow-clients"
    HELP = "normal throughput and p99 with and without hundreds of slow attackers; how fast stalls are cut"
    OPTIONS = {
        "duration": (float, 30, "seconds of normal traffic per phase"),
        "concurrency": (int, 8, "normal closed-loop users"),
        "bodies": (int, 300, "slow-body attackers"),
        "headers": (int, 50, "slow-header attackers"),
        "readers": (int, 20, "attackers that never read their answers"),
        "connect-rate": (float, 50, "new attacker connections per second, in all"),
        "proxy": (str, ",".join(PROXIES), f"front doors (http.proxy) to run, comma-separated: {', '.join(PROXIES)}"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        proxies = [p for p in args.proxy.split(",") if p]
        if not proxies or set(proxies) - set(PROXIES):
            raise ValueError(f"--proxy takes {', '.join(PROXIES)} (comma-separated), not {args.proxy!r}")
        runs = {proxy: cls.run_one(args, pool, proxy) for proxy in proxies}
        phases = [row for r in runs.values() for row in r["phases"]]
        stalls = [row for r in runs.values() for row in r["stalls"]]
        plots = [plot_bars(args.out, "normal.png", {f"{p['proxy']}, {p['phase']}": {
            "requests/s": p["requests_per_s"], "p99 ms / 10": p["p99_ms"] / 10} for p in phases},
            "", "value", "normal traffic alone and under attack, by front door")]
        http = HttpOptions(**runs[proxies[0]]["http"])
        measured = "\n".join(f"- `{p}` at commit `{r['commit']}`: throughput under attack / alone "
                             f"**{r['throughput_ratio']:.2f}** (target >= 0.8, no errors)" for p, r in runs.items())
        write_results(args.out, {"runs": runs, "args": vars(args) | {"out": str(args.out)}}, f"""# {cls.NAME}

{_sentence(cls.__doc__.split(":", 1)[1])}

Normal traffic: {args.concurrency} closed-loop users, {args.duration:g} s per phase. Attack: {args.bodies} slow
bodies, {args.headers} slow headers, {args.readers} non-readers, from {len(ATTACKER_SOURCES)} addresses, at most
{args.connect_rate:g} new connections/s. Limits (the shipped defaults): body grace {http.body_timeout_s:g} s, idle
{http.body_idle_timeout_s:g} s, at least {http.body_min_rate_bytes_per_s} bytes/s; headers within
{http.header_timeout_s:g} s; {http.max_connections_per_client} connections and
{http.max_inflight_per_client} requests in flight per client address (behind HAProxy the ingress reads the client's
address from the X-Forwarded-For HAProxy appends); keep-alive {http.keep_alive_timeout_s} s.

{measured}

{table(phases, COLUMNS)}

Stalled connections (refused_on_accept: closed with no answer within {REFUSED_WITHIN_S:g} s, over the per-address
connection limit; closed_*: seconds from the attacker's last byte until the server closed a connection it had
admitted; readers read nothing until 2 s before the end, so theirs only say whether the server had closed by then):

{table(stalls, STALL_COLUMNS)}

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        figures = "; ".join(
            f"{p} (at {r['commit']}): {r['throughput_ratio']:.2f}x throughput ({r['attacked']['requests_per_s']:.0f} vs "
            f"{r['alone']['requests_per_s']:.0f} req/s), p99 {r['attacked']['p99_ms']:.0f} vs "
            f"{r['alone']['p99_ms']:.0f} ms, {r['attacked']['errors']} errors, slow bodies closed p99 "
            f"{r['stalls'][0]['closed_p99_s'] or 0:.1f} s, slow headers {r['stalls'][1]['closed_p99_s'] or 0:.1f} s"
            for p, r in runs.items())
        return {"scenario": cls.NAME, "figure": f"{args.bodies + args.headers + args.readers} attackers: {figures}",
                "ok": all(r["throughput_ratio"] >= 0.8 and r["attacked"]["errors"] == 0 for r in runs.values())}

    @classmethod
    def run_one(cls, args: argparse.Namespace, pool: ServerPool, proxy: str) -> dict:
        config = digits_config()
        config["http"].update(proxy=proxy, limit_loopback=True)
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
        return {"commit": _commit(), "http": server.config["http"], "alone": alone, "attacked": attacked,
                "throughput_ratio": attacked["requests_per_s"] / alone["requests_per_s"],
                "phases": [{"proxy": proxy, "phase": "alone", **alone},
                           {"proxy": proxy, "phase": "under attack", **attacked}],
                "stalls": [_stall_row(proxy, kind, attack.of(kind)) for kind in counts]}
