"""The standard set: every scenario with its default settings, and loadtests/RESULTS.md with the figures."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path
from typing import Callable

from loadtests.report import table
from loadtests.server import ROOT, ServerPool

RESULTS_MD = ROOT / "loadtests" / "RESULTS.md"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}), {memory_gb:.0f} GiB, no GPU used"


def run_standard(scenarios: dict, args_for: Callable[[str], argparse.Namespace], pool: ServerPool,
                 results_md: Path = RESULTS_MD) -> list[dict]:
    rows = []
    started = time.monotonic()
    for name, scenario in scenarios.items():
        args = args_for(name)
        t0 = time.monotonic()
        try:
            headline = scenario.run(args, pool)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            headline = {"scenario": name, "figure": f"failed: {type(exc).__name__}: {exc}"[:200], "ok": False}
        headline["minutes"] = (time.monotonic() - t0) / 60
        headline["report"] = f"[report]({os.path.relpath(args.out / 'report.md', results_md.parent)})"
        rows.append(headline)
        print(f"{name}: {headline['figure']} ({headline['minutes']:.1f} min)", flush=True)
        write_results_md(rows, results_md, (time.monotonic() - started) / 60)
    return rows


def write_results_md(rows: list[dict], path: Path, minutes: float) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"""# Load test results on this machine

{today}; {machine()}. `python -m loadtests standard` ran the whole set in {minutes:.1f} minutes.
The load generator runs on the same cores as the server; machine load average at the end
{"/".join(f"{v:.1f}" for v in os.getloadavg())} (above 2 means other work shared the cores). Each scenario's
report has its tables and plots.

{table(rows, ['scenario', 'figure', 'ok', 'minutes', 'report'])}
""")
