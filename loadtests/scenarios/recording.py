"""recording: what keeping the A/B evidence costs /classify, on each store, buffered and durable."""
from __future__ import annotations

import argparse
import contextlib
import statistics

from tqdm import tqdm

from loadtests.generator import run_closed
from loadtests.postgres import temporary_postgres
from loadtests.report import plot_bars, table, write_results
from loadtests.scenarios.common import DIGITS, Scenario, digits_config, digits_shots, warm_up
from loadtests.server import ServerPool

# feedback settings per recording mode; "off" keeps nothing, so its store does not matter
MODES = {"off": {"record": False}, "buffered": {"durable_answers": False}, "durable": {"durable_answers": True}}
COLUMNS = ["store", "recording", "concurrency", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors"]


def recording_config(mode: str, url: str | None) -> dict:
    """The digits config with one recording mode; `url` None is the server's own SQLite file."""
    config = digits_config()
    config["feedback"] = {**config.get("feedback", {}), **MODES[mode], **({"url": url} if url else {})}
    return config


class RecordingCost(Scenario):
    """recording: /classify (digits, one image) with recording off, buffered (the write buffer's thread commits
    every flush_interval_s) and durable (each answer waits for its row's group commit), on SQLite and on a
    PostgreSQL started here with fsync on, as a production database runs. A server of its own per case (a
    SIGHUP reload would replace every deployment whenever serve/ changed meanwhile); `--rounds` repeats the
    cases interleaved, so a busy machine shows as spread."""

    NAME = "recording"
    HELP = "/classify with recording off, buffered and durable, on SQLite and PostgreSQL (digits, c=1 and c=8)"
    OPTIONS = {
        "duration": (float, 10, "seconds per case and concurrency"),
        "concurrency": (str, "1,8", "closed-loop users, comma-separated"),
        "stores": (str, "sqlite,postgresql", "stores to measure, comma-separated"),
        "rounds": (int, 3, "times every case is measured, interleaved"),
    }

    @classmethod
    def run(cls, args: argparse.Namespace, pool: ServerPool) -> dict:
        levels = [int(c) for c in args.concurrency.split(",")]
        stores = args.stores.split(",")
        make = digits_shots()
        rows = []
        with contextlib.ExitStack() as stack:
            urls: dict[str, str | None] = {"sqlite": None}
            if "postgresql" in stores:
                urls["postgresql"] = stack.enter_context(temporary_postgres(fsync=True)).url()
            cases = [("sqlite", "off")] + [(s, m) for s in stores for m in ("buffered", "durable")]
            for _, (store, mode) in tqdm([(r, c) for r in range(args.rounds) for c in cases], desc=cls.NAME,
                                         unit="case"):
                server = pool.get(recording_config(mode, urls[store]))
                warm_up(server.url, make)
                for level in levels:
                    summary = run_closed(server.url, make, level, args.duration).summary()
                    rows.append({"store": store if mode != "off" else "–", "recording": mode,
                                 "concurrency": level, **summary})
            pool.close()  # before the database goes
        merged = _median_by_case(rows)
        _relative_to_off(merged)
        plots = [plot_bars(args.out, f"{q}.png", {f"c={c}": {f"{r['store']} {r['recording']}": r[q] for r in merged
                                                             if r["concurrency"] == c} for c in levels},
                           "store, recording", label, f"{cls.NAME}: {label} ({DIGITS})")
                 for q, label in (("p50_ms", "p50 latency (ms)"), ("requests_per_s", "requests/s"))]
        write_results(args.out, {"model": DIGITS, "duration_s": args.duration, "rounds": args.rounds, "runs": rows,
                                 "median": merged}, f"""# {cls.NAME}

Model {DIGITS}, one PNG per request, closed loop at concurrency {args.concurrency} for {args.duration:g} s per case;
each case measured {args.rounds} time(s), interleaved; the table gives the median of the rounds. PostgreSQL is
started here (Debian's, fsync on); SQLite is the server's own file (WAL, synchronous=NORMAL). `durable` answers
only once the prediction's row is committed (`feedback.durable_answers`), `buffered` answers at once and a thread
commits every `flush_interval_s` (0.2 s), `off` keeps nothing (`feedback.record: false`).

{table(merged, COLUMNS + ['p50_vs_off_ms', 'throughput_vs_off'])}

Every round:

{table(rows, COLUMNS)}

![{plots[0]}]({plots[0]}) ![{plots[1]}]({plots[1]})
""")
        figure = "; ".join(f"{r['store']} {r['recording']} c={r['concurrency']}: {r['requests_per_s']:.0f} req/s, "
                           f"p50 {r['p50_ms']:.1f} ms" for r in merged if r["recording"] != "off"
                           and r["concurrency"] == levels[0])
        return {"scenario": cls.NAME, "figure": figure, "ok": all(r["errors"] == 0 for r in rows)}


def _median_by_case(rows: list[dict]) -> list[dict]:
    """One row per (store, recording, concurrency): the median round of each figure."""
    keys = ("store", "recording", "concurrency")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    figures = ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")
    return [{**dict(zip(keys, key)), **{f: statistics.median(r[f] for r in group) for f in figures},
             "errors": sum(r["errors"] for r in group)} for key, group in groups.items()]


def _relative_to_off(rows: list[dict]) -> None:
    off = {r["concurrency"]: r for r in rows if r["recording"] == "off"}
    for r in rows:
        base = off.get(r["concurrency"])
        r["p50_vs_off_ms"] = r["p50_ms"] - base["p50_ms"] if base else None
        r["throughput_vs_off"] = r["requests_per_s"] / base["requests_per_s"] if base and base["requests_per_s"] \
            else None
