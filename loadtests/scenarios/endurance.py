"""Soak at ~70 % of capacity with the memory of every server process over time, and fault injection."""
from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from loadtests.generator import LoadRun, run_closed, run_open
from loadtests.report import plot_series, table, write_results
from loadtests.sampler import MemorySampler
from loadtests.scenarios.common import DIGITS, Scenario, capacity_per_s, digits_config, warm_digits_server
from loadtests.server import LiveServer, ServerPool
from loadtests.stats import linear_slope

COLUMNS = ["requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors"]


def memory_growth(times_s: list[float], totals_mb: list[float]) -> float:
    """MB per minute over the later two thirds of the run (the first third is warm-up: caches, arenas)."""
    start = len(times_s) // 3
    return 60 * linear_slope(times_s[start:], totals_mb[start:])


class Soak(Scenario):
    """soak: minutes at ~70 % of measured capacity (open loop); errors and every server process's memory.

    A growth trend fails: total RSS rising faster than --max-growth-mb-per-min over the later two thirds.
    Twelve minutes by default because warming up lasts about four here (12 minutes at 86 requests/s:
    +11.1, +2.4, +0.1 MB/min over the thirds); a shorter run judges the warm-up, not a leak."""

    NAME = "soak"
    HELP = "N minutes at about 70 percent of measured capacity; errors and every server process's memory over time"
    OPTIONS = {
        "minutes": (float, 12, "minutes of load (at least three times the warm-up)"),
        "load": (float, 0.7, "fraction of measured capacity"),
        "max-growth-mb-per-min": (float, 5.0, "largest accepted growth of total RSS"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server, make = warm_digits_server(pool)
        capacity = capacity_per_s(server.url, make)
        rate = round(args.load * capacity, 1)
        with MemorySampler(server, period_s=max(2.0, args.minutes * 60 / 120)) as sampler:
            load = run_open(server.url, make, rate, args.minutes * 60, timeout_s=10)
        summary = load.summary()
        times, totals = sampler.totals()
        growth = memory_growth(times, totals)
        series = {name: data for name, data in sampler.series().items() if max(data[1]) > 20}
        plots = [plot_series(args.out, "memory.png", {"total": (times, totals)}, "seconds", "RSS (MB)",
                             f"{cls.NAME}: server process tree total"),
                 plot_series(args.out, "memory_by_process.png", series, "seconds", "RSS (MB)",
                             f"{cls.NAME}: each server process (> 20 MB)"),
                 plot_series(args.out, "throughput.png", _timeline_series(load), "seconds", "images/s",
                             f"{cls.NAME}: throughput per second at {rate:g} requests/s offered")]
        ok = summary["errors"] == 0 and growth <= args.max_growth_mb_per_min
        first, last = sampler.samples[0][1], sampler.samples[-1][1]
        per_process = [{"process": name[:70], "first_mb": first.get(name), "last_mb": mb} for name, mb in last.items()
                       if mb > 20]
        write_results(args.out, {"capacity_per_s": capacity, "rate_per_s": rate, "minutes": args.minutes,
                                 "summary": summary, "memory_growth_mb_per_min": growth,
                                 "memory_total_mb": {"seconds": times, "mb": totals}, "memory_by_process": per_process}, f"""# {cls.NAME}

Model {DIGITS}; open loop at {rate:g} requests/s ({args.load:.0%} of the measured {capacity:.1f}) for
{args.minutes:g} minutes.

{table([summary], COLUMNS)}

Total RSS {totals[0]:.0f} MB -> {totals[-1]:.0f} MB; trend over the later two thirds **{growth:+.2f} MB/min**
(limit {args.max_growth_mb_per_min:g}). Verdict: **{'pass' if ok else 'FAIL'}**.

{table(per_process, ['process', 'first_mb', 'last_mb'])}

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        return {"scenario": cls.NAME, "figure": f"{args.minutes:g} min at {rate:g} req/s: {summary['errors']} errors, "
                f"memory {growth:+.1f} MB/min", "ok": ok}


def _timeline_series(load: LoadRun) -> dict[str, tuple[list[float], list[float]]]:
    timeline = load.timeline()
    return {"images/s": ([b["t"] for b in timeline], [b["images_per_s"] for b in timeline]),
            "errors/s": ([b["t"] for b in timeline], [b["errors"] for b in timeline])}


def recovery_s(load: LoadRun, event_t: float, baseline: float, share: float = 0.85) -> float | None:
    """Seconds from the event until a 3-second window first averages `share` of the baseline throughput."""
    bins = [b for b in load.timeline()[:-1] if b["t"] > event_t]  # the last bin is cut short by the run's end
    for i in range(len(bins) - 2):
        if sum(b["images_per_s"] for b in bins[i:i + 3]) / 3 >= share * baseline:
            return max(0.0, bins[i]["t"] - 0.5 - event_t)
    return None


def _after(delay_s: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), action()), daemon=True)
    thread.start()
    return thread


class Faults(Scenario):
    """faults: kill one classifier replica under load; separately restart the whole application.

    Reports failed requests, time until the old throughput returns, and requests that hung to their
    timeout. Target: failures bounded by the requests in flight on the killed replica, recovery within 30 s."""

    NAME = "faults"
    HELP = "kill one classifier replica under load; separately restart the whole application"
    OPTIONS = {
        "concurrency": (int, 8, "closed-loop users (comma-separated where several)"),
        "timeout": (float, 10, "per-request timeout (s)"),
        "kill-duration": (float, 45, "seconds of load around the replica kill"),
        "restart-duration": (float, 90, "seconds of load around the restart"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        server, make = warm_digits_server(pool, digits_config(replicas=2, num_cpus=0.5, runs_in="replica"))
        kill = cls._kill_replica(args, server, make)
        restart = cls._restart_app(args, server, make)
        phases = [kill, restart]
        plots = [plot_series(args.out, f"{p['phase']}.png", p.pop("series"), "seconds", "per second",
                             f"{cls.NAME}: {p['phase']}", marks=p.pop("marks")) for p in phases]
        ok = all(p["recovery_s"] is not None and p["recovery_s"] <= 30 and p["timed_out"] == 0 for p in phases) \
            and kill["failed"] <= args.concurrency
        write_results(args.out, {"phases": phases, "timeout_s": args.timeout}, f"""# {cls.NAME}

Model {DIGITS} with 2 replicas of its own (`runs_in: replica`, 0.5 CPU each); request timeout {args.timeout:g} s.

- kill-replica: closed loop at concurrency {args.concurrency}; one `ServeReplica` process of {DIGITS} gets SIGKILL.
  Requests in flight on it are at most the concurrency ({args.concurrency}).
- restart-app: open loop at half the measured throughput; the server process is stopped (drain) and started again.

{table(phases, ['phase', 'requests', 'failed', 'timed_out', 'baseline_images_per_s', 'recovery_s', 'longest_ms',
               'statuses'])}

Recovery: seconds from the event until a 3-second window averages 85 % of the throughput before it.
Status 0 means no HTTP answer (connection refused while the application was down, or the client's timeout).
Killed replica PIDs: {kill['victims']}; replicas of {DIGITS} afterwards: {kill['replicas_after']}.
Restart-app: the new server was ready {restart['ready_after_s']} s after the restart began.

Target: kill-replica failures ≤ requests in flight, recovery ≤ 30 s, no request reaching its timeout (hung).
Verdict: **{'pass' if ok else 'FAIL'}**.

{chr(10).join(f'![{p}]({p})' for p in plots)}
""")
        return {"scenario": cls.NAME, "figure": "; ".join(f"{p['phase']}: {p['failed']} failed, recovery "
                                                         f"{p['recovery_s']} s" for p in phases), "ok": ok}

    @staticmethod
    def _kill_replica(args: argparse.Namespace, server: LiveServer, make) -> dict:
        event_t = args.kill_duration / 4
        victims: list[int] = []

        def kill() -> None:
            pids = server.replica_pids(f"classifier-{DIGITS}")
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                victims.append(pids[0])

        _after(event_t, kill)
        load = run_closed(server.url, make, args.concurrency, args.kill_duration, timeout_s=args.timeout)
        return _phase("kill-replica", load, event_t, {"replica killed": event_t}, victims=victims,
                      replicas_after=len(server.replica_pids(f"classifier-{DIGITS}")))

    @staticmethod
    def _restart_app(args: argparse.Namespace, server: LiveServer, make) -> dict:
        rate = round(run_closed(server.url, make, args.concurrency, 5).summary()["requests_per_s"] / 2, 1)
        event_t = 5.0
        ready_at: list[float] = []
        started = time.perf_counter()

        def restart() -> None:
            server.stop()
            server.start()
            ready_at.append(time.perf_counter() - started)

        _after(event_t, restart)
        load = run_open(server.url, make, rate, args.restart_duration, timeout_s=args.timeout)
        marks = {"restart": event_t, **({"ready": ready_at[0]} if ready_at else {})}
        return _phase("restart-app", load, event_t, marks, offered_per_s=rate,
                      ready_after_s=round(ready_at[0] - event_t, 1) if ready_at else None)


def _phase(name: str, load: LoadRun, event_t: float, marks: dict[str, float], **extra) -> dict:
    before = [b["images_per_s"] for b in load.timeline() if 1 < b["t"] < event_t]
    baseline = sum(before) / max(len(before), 1)
    summary = load.summary()
    return {"phase": name, "requests": summary["requests"], "failed": summary["errors"],
            "timed_out": sum(o.timed_out for o in load.outcomes), "statuses": summary["statuses"],
            "baseline_images_per_s": baseline, "recovery_s": recovery_s(load, event_t, baseline),
            "longest_ms": 1000 * max(o.done - o.sent for o in load.outcomes), **extra,
            "series": _timeline_series(load), "marks": marks}
