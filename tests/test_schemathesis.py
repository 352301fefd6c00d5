"""Schemathesis generates requests from the live server's OpenAPI document: no 5xx, answers as documented.

The default run is short; `SCHEMATHESIS_SECONDS=600 pytest -m slow tests/test_schemathesis.py` runs longer.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~60 s: CI runs it (-m slow)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def schemathesis(server: LiveServer, seconds: int, examples: int, report: Path) -> subprocess.CompletedProcess:
    st = Path(sys.executable).with_name("st")
    return subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--max-examples", str(examples),
         "--max-time", str(seconds), "--workers", "1", "--exclude-path", "/metrics", "--no-color",
         "--report", "junit", "--report-dir", str(report), "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=seconds + 300, cwd=report)  # its .schemathesis/ cache too


def test_generated_requests_get_documented_answers_and_never_a_5xx(server: LiveServer, tmp_path):
    result = schemathesis(server, int(os.environ.get("SCHEMATHESIS_SECONDS", "60")), 25, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
