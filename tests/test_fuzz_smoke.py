"""Every fuzz target in fuzz/ runs: its seed corpus, its committed findings, and a short fixed fuzzing run.

A target that crashes, hangs past -timeout or passes -rss_limit_mb fails the test; the long runs are
`make fuzz` or `pytest -m fuzz` (FUZZ_SECONDS per target, default 600).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.run import FINDING_PREFIXES, TARGETS

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"

# Fuzzed inputs per target: a few seconds each here (inputs/s: image ~400, body ~700, the rest ~20,000).
RUNS = {"image": 1_000, "body": 2_000, "oip": 20_000, "feedback": 20_000, "query": 20_000}


def _fuzz(target: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"), "-timeout=10", "-rss_limit_mb=2048",
                           *args], cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=300)


@pytest.mark.parametrize("target", TARGETS)
def test_target_survives_a_short_run(target: str, tmp_path: Path):
    grown = tmp_path / "corpus"
    grown.mkdir()
    proc = _fuzz(target, str(grown), str(FUZZ / "corpus" / target), f"-runs={RUNS[target]}", "-seed=1",
                 f"-artifact_prefix={tmp_path}/")
    findings = [p.name for p in tmp_path.iterdir() if p.name.startswith(FINDING_PREFIXES)]
    assert proc.returncode == 0 and not findings, proc.stderr[-4000:]
    assert "INITED" in proc.stderr and "cov:" in proc.stderr


@pytest.mark.parametrize("target", [t for t in TARGETS if (FUZZ / "regressions" / t).is_dir()])
def test_target_passes_its_committed_findings(target: str):
    files = sorted(str(p) for p in (FUZZ / "regressions" / target).iterdir())
    proc = _fuzz(target, *files)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr.count("Executed ") == len(files)


@pytest.mark.fuzz
@pytest.mark.timeout(0)  # FUZZ_SECONDS per target, one after another
def test_long_fuzzing_finds_nothing(tmp_path: Path):
    seconds = os.environ.get("FUZZ_SECONDS", "600")
    proc = subprocess.run([sys.executable, str(FUZZ / "run.py"), "--seconds", seconds, "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
