"""Where an artifact came from: the command, seed, code commit, date and torch version that made it."""
from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

_REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(command: str, seed: int | None) -> dict[str, Any]:
    """`dirty` says whether tracked files differed from `commit`, i.e. whether the commit alone rebuilds it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": command,
        "seed": seed,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "created": utc_now(),
        "torch": torch.__version__,
    }
