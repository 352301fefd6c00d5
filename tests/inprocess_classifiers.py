"""The shipped models run by ONNX Runtime in the test process: what a DataPlane needs, without Ray."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from serve.runtime.inference import OnnxClassifier, create_session
from serve.runtime.preprocess import decode_and_preprocess_all
from serve.runtime.providers import plan_providers
from serve.runtime.repository import ModelArtifact


class InProcessClassifiers:
    def __init__(self, artifacts: list[ModelArtifact], max_pixels: int = 40_000_000) -> None:
        self.models = {}
        for artifact in artifacts:
            plan = plan_providers("cpu", [], 1, ort.get_available_providers(), "fp32", False)
            session = create_session(str(artifact.onnx_path), plan, "cpu", spin_wait=False)
            self.models[artifact.key] = OnnxClassifier(session)
        self.max_pixels = max_pixels
        self.calls: list[str] = []

    async def infer(self, artifact: ModelArtifact, batch: np.ndarray) -> np.ndarray:
        self.calls.append(artifact.key)
        return self.models[artifact.key].predict(batch)

    async def classify_encoded(self, images: list[bytes], artifact: ModelArtifact) -> np.ndarray:
        batch, _ = await decode_and_preprocess_all(images, artifact.preprocessing, self.max_pixels)
        return await self.infer(artifact, batch)


def shipped_keys(repository: Path) -> list[str]:
    return [f"{d.parent.name}/{d.name}" for d in sorted(repository.glob("*/*")) if (d / "model.onnx").exists()]
