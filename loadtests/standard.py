"""The standard set: every scenario with its default settings, and loadtests/RESULTS.md with the figures."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

from loadtests.report import table
from loadtests.server import ROOT, ServerPool

RESULTS_MD = ROOT / "loadtests" / "RESULTS.md"
HEADLINE = "headline.json"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}), {memory_gb:.0f} GiB, no GPU used"


def run_standard(scenarios: dict, args_for: Callable[[str], argparse.Namespace], pool: ServerPool,
                 everything: list[str], results_md: Path = RESULTS_MD) -> list[dict]:
    """Run `scenarios`; RESULTS.md lists every scenario of `everything` that has a headline on disk, so a
    partial re-run (`--only`) updates its rows and keeps the others."""
    rows = []
    for name, scenario in scenarios.items():
        args = args_for(name)
        started = time.monotonic()
        try:
            headline = scenario.run(args, pool)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            headline = {"scenario": name, "figure": f"failed: {type(exc).__name__}: {exc}"[:200], "ok": False}
        rows.append(record_headline(args.out, headline, started))
        print(f"{name}: {headline['figure']} ({headline['minutes']:.1f} min)", flush=True)
        write_results_md([args_for(n).out for n in everything], results_md)
    return rows


def record_headline(out: Path, headline: dict, started: float) -> dict:
    """The scenario's headline with when, how long and how loaded, kept in `out` for RESULTS.md."""
    finished = datetime.datetime.now(datetime.timezone.utc)
    headline.update(minutes=(time.monotonic() - started) / 60, date=finished.strftime("%Y-%m-%d %H:%M UTC"),
                    load_average="/".join(f"{v:.1f}" for v in os.getloadavg()))
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADLINE).write_text(json.dumps(headline, indent=2) + "\n")
    return headline


def write_results_md(outs: list[Path], path: Path) -> None:
    rows = []
    for out in outs:
        if (out / HEADLINE).exists():
            row = json.loads((out / HEADLINE).read_text())
            row["report"] = f"[report]({os.path.relpath(out / 'report.md', path.parent)})"
            rows.append(row)
    total = sum(r["minutes"] for r in rows)
    path.write_text(f"""# Load test results on this machine

{machine()}. `python -m loadtests standard` runs the set (here {total:.1f} minutes in all).
The load generator runs on the same cores as the server. `load_average` is the machine's 1/5/15-minute
load when the scenario ended: above 2 means other work shared the 2 cores, and figures then vary from run
to run. Each scenario's report has its tables and plots.

{table(rows, ['scenario', 'figure', 'ok', 'date', 'minutes', 'load_average', 'report'])}
""")
