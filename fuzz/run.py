"""Run every fuzz target for a while, one after another, restarting a target after each finding.

libFuzzer stops at its first crash; restarting on the corpus grown so far keeps the time budget going to
search (atheris has no working -fork mode). Findings (crash-*, oom-*, timeout-*, slow-unit-*) land in
OUT/<target>/findings/, the grown corpus in OUT/<target>/corpus/, each run's log in OUT/<target>/log-N.txt,
and the figures in OUT/summary.json. Exits 1 when any target found something.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

FUZZ = Path(__file__).resolve().parent
TARGETS = ("image", "body", "oip", "feedback", "query")
STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
FINDING_PREFIXES = ("crash-", "oom-", "timeout-", "slow-unit-", "leak-")


def libfuzzer_args(corpus: Path, findings: Path, seconds: int, timeout_s: int, rss_limit_mb: int) -> list[str]:
    return [str(corpus), str(FUZZ / "corpus" / corpus.parent.name), f"-max_total_time={seconds}",
            f"-timeout={timeout_s}", f"-rss_limit_mb={rss_limit_mb}", f"-artifact_prefix={findings}/",
            "-print_final_stats=1"]


def last_stats(log: str) -> dict[str, int]:
    """The last `#execs ... cov: ft: corp:` line libFuzzer printed."""
    found = [m for m in map(STATS.match, log.splitlines()) if m]
    if not found:
        return {"execs": 0, "cov": 0, "ft": 0, "corpus": 0}
    execs, cov, ft, corpus = map(int, found[-1].groups())
    return {"execs": execs, "cov": cov, "ft": ft, "corpus": corpus}


def fuzz_target(target: str, out: Path, seconds: int, timeout_s: int, rss_limit_mb: int, bar: tqdm) -> dict:
    corpus, findings = out / target / "corpus", out / target / "findings"
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    total = {"target": target, "execs": 0, "runs": 0, "seconds": 0.0}
    while (left := int(deadline - time.monotonic())) >= 5:
        started = time.monotonic()
        log = out / target / f"log-{total['runs']}.txt"
        with log.open("w") as sink:  # written as it goes, so a long run can be watched with tail -f
            proc = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"),
                                   *libfuzzer_args(corpus, findings, left, timeout_s, rss_limit_mb)],
                                  cwd=FUZZ.parent, stdout=sink, stderr=subprocess.STDOUT)
        stats = last_stats(log.read_text(errors="replace"))
        total["execs"] += stats["execs"]
        total.update(cov=stats["cov"], ft=stats["ft"], runs=total["runs"] + 1)
        total["seconds"] += time.monotonic() - started
        bar.update(round(time.monotonic() - started))
        if proc.returncode == 0:
            break
    total["corpus"] = sum(1 for _ in corpus.iterdir())
    total["findings"] = sorted(p.name for p in findings.iterdir() if p.name.startswith(FINDING_PREFIXES))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", nargs="*", default=list(TARGETS), help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time per target")
    parser.add_argument("--out", type=Path, default=FUZZ / "out")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    args = parser.parse_args()
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; the targets are {', '.join(TARGETS)}")
    results = []
    with tqdm(total=args.seconds * len(args.targets), unit="s", desc="fuzzing") as bar:
        for target in args.targets:
            bar.set_postfix_str(target)
            results.append(fuzz_target(target, args.out, args.seconds, args.timeout, args.rss_limit_mb, bar))
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    for r in results:
        print(f"{r['target']:9} execs {r['execs']:>10,}  cov {r['cov']:>5}  ft {r['ft']:>6}  corpus {r['corpus']:>5}"
              f"  runs {r['runs']}  findings {len(r['findings'])}")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
