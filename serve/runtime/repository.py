"""The model repository on disk: models/<name>/<version>/{model.onnx, model.json}."""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.errors import ModelNotFound
from serve.runtime.preprocess import Preprocessing

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelArtifact:
    name: str
    version: str
    directory: Path
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"

    # Read on every request (top-k, the decode spec): built once per artifact, and only read by their users.
    @functools.cached_property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_metadata(self.meta)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "arch": self.meta.get("arch")}


def version_sort_key(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


def available_versions(repository: Path, name: str) -> list[str]:
    """Versions of `name` that hold a model.json, oldest first."""
    if not _SAFE.match(name):
        raise ModelNotFound(f"no model named {name!r}")
    folder = repository / name
    if not folder.is_dir():
        return []
    found = [d.name for d in folder.iterdir() if (d / "model.json").is_file() and _SAFE.match(d.name)]
    return sorted(found, key=version_sort_key)


def load_artifact(repository: Path, name: str, version: str = "latest") -> ModelArtifact:
    versions = available_versions(repository, name)
    if not versions:
        raise ModelNotFound(f"no model named {name!r} in {repository}")
    if version == "latest":
        version = versions[-1]
    elif version not in versions:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {versions}")
    directory = repository / name / version
    meta = json.loads((directory / "model.json").read_text())
    return ModelArtifact(name, version, directory, meta)


def verify_checksum(artifact: ModelArtifact) -> None:
    """Refuse to serve a model file that is not the one its metadata describes."""
    digest = hashlib.sha256(artifact.onnx_path.read_bytes()).hexdigest()
    expected = artifact.meta.get("sha256")
    if expected != digest:
        raise ValueError(f"{artifact.onnx_path}: sha256 {digest} does not match model.json ({expected})")
