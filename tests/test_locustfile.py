"""The Locust file drives the live server with every scenario's task and records no failure."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

from tests.conftest import ROOT


def run_locust(url: str, tmp_path, seconds: int = 8, **env: str) -> dict[str, dict]:
    prefix = tmp_path / "locust"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
                    "--host", url, "-u", "4", "-r", "4", "-t", f"{seconds}s", "--csv", str(prefix),
                    "--only-summary"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    return {row["Name"]: row for row in csv.DictReader((tmp_path / "locust_stats.csv").open())}


def test_locust_runs_every_task_without_failures(server, tmp_path):
    rows = run_locust(server.url, tmp_path)
    total = rows.pop("Aggregated")
    assert int(total["Request Count"]) > 20 and int(total["Failure Count"]) == 0, total
    assert {"/classify single", "/classify x8", "/classify ab"} <= set(rows), sorted(rows)
