"""`python -m loadtests <scenario> --out DIR`, or `python -m loadtests standard` for the standard set."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

from loadtests.scenarios import SCENARIOS
from loadtests.server import ROOT, ServerPool
from loadtests.standard import RESULTS_MD, record_headline, run_standard, write_results_md


RESULTS = ROOT / "loadtests" / "results"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    parsers = {}
    for name, scenario in SCENARIOS.items():
        p = sub.add_parser(name, help=scenario.HELP, description=scenario.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", type=Path, default=RESULTS / name)
        scenario.add_arguments(p)
        parsers[name] = p
    std = sub.add_parser("standard", help="every scenario with its defaults; writes loadtests/RESULTS.md")
    std.add_argument("--out", type=Path, default=RESULTS, help="each scenario writes DIR/<scenario>/")
    std.add_argument("--soak-minutes", type=float, help="default: the soak scenario's own")
    std.add_argument("--only", default="", help="comma-separated subset of scenarios")
    return parser, parsers


def main(argv: list[str] | None = None) -> int:
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the servers started here are stopped
    with tempfile.TemporaryDirectory(prefix="loadtests-") as work:
        pool = ServerPool(Path(work))
        try:
            if args.scenario == "standard":
                chosen = {n: s for n, s in SCENARIOS.items() if not args.only or n in args.only.split(",")}
                extra = {"soak": ["--minutes", str(args.soak_minutes)]} if args.soak_minutes else {}
                rows = run_standard(chosen, lambda n: parsers[n].parse_args(
                    ["--out", str(args.out / n), *extra.get(n, [])]), pool, list(SCENARIOS))
                return 0 if all(r["ok"] for r in rows) else 1
            started = time.monotonic()
            headline = record_headline(args.out, SCENARIOS[args.scenario].run(args, pool), started)
            if args.out == RESULTS / args.scenario:  # a run in the shipped place updates its RESULTS.md row
                write_results_md([RESULTS / name for name in SCENARIOS], RESULTS_MD)
        finally:
            pool.close()
    print(f"{headline['scenario']}: {headline['figure']} -> {args.out}")
    return 0 if headline.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
