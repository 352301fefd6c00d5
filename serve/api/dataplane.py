"""Everything the endpoints do once HTTP is parsed: one object owns the models, the experiment and its evidence.

The endpoint class stays routing only; this object can run without Ray, given any client that returns
probabilities (the tests give it ONNX Runtime in the same process).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Mapping, Protocol

import numpy as np

from serve.ab.feedback import parse_feedback
from serve.ab.database import is_transient
from serve.ab.recorder import FeedbackRecorder
from serve.ab.rollout_driver import RolloutDriver
from serve.ab.rollout_store import RolloutStore
from serve.ab.router import ExperimentRouter
from serve.ab.shadow import ShadowMirror
from serve.api import oip
from serve.config import Limits
from serve.errors import PayloadTooLarge, StoreUnavailable
from serve.metrics import ServeMetrics
from serve.runtime.catalog import ModelCatalog
from serve.runtime.postprocess import parse_k, top_k
from serve.runtime.repository import ModelArtifact


class Classifiers(Protocol):
    def infer(self, artifact: ModelArtifact, batch: np.ndarray) -> Awaitable[np.ndarray]: ...

    def classify_encoded(self, images: list[bytes], artifact: ModelArtifact) -> Awaitable[np.ndarray]: ...


@dataclass(frozen=True)
class ClassifyPlan:
    """Decided before the body is read, so a wrong model or k costs the client no upload."""

    artifact: ModelArtifact
    arm: str | None
    k: int


class DataPlane:
    def __init__(self, catalog: ModelCatalog, classifiers: Classifiers, recorder: FeedbackRecorder,
                 metrics: ServeMetrics, limits: Limits) -> None:
        self.catalog, self.classifiers, self.recorder = catalog, classifiers, recorder
        self.metrics, self.limits = metrics, limits
        self.router = ExperimentRouter()
        self.rollout = RolloutDriver(self.router, RolloutStore(recorder.store), metrics)
        self.shadow = ShadowMirror(classifiers.classify_encoded, catalog.resolve, recorder, metrics)

    def reconfigure(self, experiment: Mapping[str, Any] | None) -> None:
        self.router.reconfigure(experiment, self.catalog.resolve)
        self.rollout.reapply()

    def plan_classify(self, model: str | None, k: str | None, headers: Mapping[str, str]) -> ClassifyPlan:
        arm = self.router.choose(model, headers)
        artifact = self.catalog.resolve(arm or model)
        return ClassifyPlan(artifact, arm, parse_k(k, len(artifact.labels)))

    async def classify(self, plan: ClassifyPlan, images: list[bytes], started: float) -> dict[str, Any]:
        self.rollout.ensure_started()
        try:
            return await self._classify(plan, images, started)
        except Exception as exc:
            if getattr(exc, "status", 500) >= 500:  # the rollout's error guardrail counts the arm's 5xx
                self.rollout.note_error(plan.arm)
            raise

    async def _classify(self, plan: ClassifyPlan, images: list[bytes], started: float) -> dict[str, Any]:
        artifact, arm = plan.artifact, plan.arm
        probs = await self.classifiers.classify_encoded(images, artifact)
        results = [top_k(p, plan.k, artifact.labels) for p in probs]
        for p in probs:
            self.metrics.confidence.labels(artifact.name, arm or "").observe(float(p.max()))
        self.metrics.images.labels(artifact.name, artifact.version).inc(len(images))
        request_id = uuid.uuid4().hex
        await self.recorder.record(request_id, arm or "", artifact.key, probs, time.perf_counter() - started)
        shadows = self.router.shadow_arms(arm)
        if shadows:
            self.shadow.start(request_id, images, arm, probs, shadows, self.router.experiment.shadow_timeout_s)
        body: dict[str, Any] = {"request_id": request_id, "model": artifact.summary(), "arm": arm}
        if len(images) == 1:
            body["predictions"] = results[0]
        else:
            body["results"] = [{"predictions": r} for r in results]
        return body

    async def infer_v2(self, artifact: ModelArtifact, body: bytes, header_length: str | None) -> dict[str, Any]:
        parsed = oip.parse_infer_request(body, header_length, artifact.preprocessing.input_shape,
                                         len(artifact.labels))
        if parsed.images is not None:
            if len(parsed.images) > self.limits.max_images_per_request:
                raise PayloadTooLarge(f"{len(parsed.images)} images; the limit is "
                                      f"{self.limits.max_images_per_request}")
            probs = await self.classifiers.classify_encoded(parsed.images, artifact)
        else:
            probs = await self.classifiers.infer(artifact, parsed.tensor)
        self.metrics.images.labels(artifact.name, artifact.version).inc(len(probs))
        return oip.infer_response(artifact, parsed, probs)

    def v2_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        artifact = self.catalog.resolve_versioned(name, version)
        return oip.model_metadata(artifact, self.catalog.versions(name))

    async def feedback(self, body: bytes) -> dict[str, Any]:
        return await self.recorder.score(parse_feedback(body), self.catalog)

    async def report(self) -> dict[str, Any]:
        body = await self.recorder.report(self.router.experiment)
        try:
            body["rollout"] = await asyncio.get_running_loop().run_in_executor(self.rollout.executor,
                                                                               self.rollout.report)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise StoreUnavailable("the feedback store is unavailable; retry shortly") from None
        return body

    async def drain(self) -> None:
        """The replica is going: stop deciding, and write the 5xx rows it still holds."""
        await self.rollout.stop()
