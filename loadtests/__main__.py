"""`python -m loadtests <scenario> --out DIR`, or `python -m loadtests standard` for the standard set."""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from loadtests.scenarios import SCENARIOS
from loadtests.server import ROOT, ServerPool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name, module in SCENARIOS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / name)
        module.add_arguments(p)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="loadtests-") as work:
        pool = ServerPool(Path(work))
        try:
            headline = SCENARIOS[args.scenario].run(args, pool)
        finally:
            pool.close()
    print(f"{headline['scenario']}: {headline['figure']} -> {args.out}")
    return 0 if headline.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
