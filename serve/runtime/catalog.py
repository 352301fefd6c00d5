"""Which model versions this server answers for, and how a request's model name maps to one."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from serve.errors import ModelNotFound
from serve.runtime.repository import ModelArtifact, load_artifact, version_sort_key


class ModelCatalog:
    """The loaded artifacts by `name/version`; a bare name means its newest loaded version."""

    def __init__(self, repository: Path, keys: Iterable[str], default_model: str | None = None) -> None:
        self.repository = Path(repository)
        self.artifacts: dict[str, ModelArtifact] = {}
        for key in keys:
            name, version = key.split("/", 1)
            self.artifacts[key] = load_artifact(self.repository, name, version)
        if not self.artifacts:
            raise ValueError("a catalog needs at least one model version")
        self.default_model = default_model or next(iter(self.artifacts.values())).name

    def resolve(self, model: str | None) -> ModelArtifact:
        wanted = model or self.default_model
        if wanted in self.artifacts:
            return self.artifacts[wanted]
        versions = [a for a in self.artifacts.values() if a.name == wanted]
        if not versions:
            raise ModelNotFound(f"model {wanted!r} is not loaded; GET /models lists what is")
        return max(versions, key=lambda a: version_sort_key(a.version))

    def resolve_versioned(self, name: str, version: str | None) -> ModelArtifact:
        return self.resolve(f"{name}/{version}" if version else name)

    def served_or_archived(self, key: str) -> ModelArtifact:
        """A prediction may have been served by a version this server no longer loads; its labels still count."""
        if key in self.artifacts:
            return self.artifacts[key]
        name, version = key.split("/", 1)
        return load_artifact(self.repository, name, version)

    def versions(self, name: str) -> list[str]:
        return sorted((a.version for a in self.artifacts.values() if a.name == name), key=version_sort_key)

    @staticmethod
    def describe(artifact: ModelArtifact) -> dict[str, Any]:
        return {**artifact.summary(), "metadata": artifact.meta}

    def listing(self) -> dict[str, Any]:
        return {"models": [self.describe(a) for a in self.artifacts.values()], "default": self.default_model}

    def model(self, name: str) -> dict[str, Any]:
        versions = [self.describe(a) for a in self.artifacts.values() if a.name == name]
        if not versions:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return {"name": name, "versions": versions}
