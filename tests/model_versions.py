"""A model repository holding one shipped model under several version numbers: the same weights, so every version
must answer alike."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from loadtests.server import ROOT


def repository_with_versions(path: Path, model: str, versions: tuple[str, ...]) -> Path:
    for version in versions:
        target = path / model / version
        shutil.copytree(ROOT / "models" / model / "1", target)
        card = json.loads((target / "model.json").read_text())
        (target / "model.json").write_text(json.dumps({**card, "version": version}))
    return path
