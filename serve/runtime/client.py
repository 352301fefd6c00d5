"""Calls into the models: a Classifier deployment's replicas, with Ray's failures turned into the client's errors,
or a ModelRunner in this process (`runs_in: ingress`)."""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Mapping

import numpy as np
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from serve.errors import ApiError, ReplicaUnavailable
from serve.metrics import ServeMetrics
from serve.runtime.decoding import Decoding
from serve.runtime.preprocess import decode_and_preprocess_all
from serve.runtime.repository import ModelArtifact
from serve.runtime.runner import ModelRunner, at_capacity


async def await_replica(artifact: ModelArtifact, response: DeploymentResponse) -> np.ndarray:
    """A full queue is 503 with Retry-After, a lost replica is 503 too (a retry is safe), a replica's
    ApiError (a bad image it decoded) is the client's error."""
    try:
        return await response
    except BackPressureError:
        raise at_capacity(artifact.key) from None
    except RayActorError:
        raise ReplicaUnavailable(f"a replica of {artifact.key} was lost during the request; retry") from None
    except RayTaskError as exc:
        if isinstance(exc.cause, ApiError):
            raise exc.cause from None
        raise


class ModelClient:
    """Probabilities from a model version's replicas, decoded where and as its Decoding says (the ingress's
    decoding shares this process's budget), or from its runner in this process, which decodes in this process's
    `executor` as `preprocess_in: ingress` does."""

    def __init__(self, handles: Mapping[str, DeploymentHandle], decoding: Mapping[str, Decoding],
                 max_pixels: int, executor: Executor, metrics: ServeMetrics,
                 runners: Mapping[str, ModelRunner] | None = None) -> None:
        self.handles, self.decoding, self.runners = dict(handles), dict(decoding), dict(runners or {})
        self.max_pixels, self.executor, self.metrics = max_pixels, executor, metrics

    async def infer(self, artifact: ModelArtifact, batch: np.ndarray) -> np.ndarray:
        if artifact.key in self.runners:
            return await self.runners[artifact.key].infer(batch)
        return await await_replica(artifact, self.handles[artifact.key].remote(batch))

    async def classify_encoded(self, images: list[bytes], artifact: ModelArtifact) -> np.ndarray:
        if artifact.key in self.runners:
            return await self.runners[artifact.key].classify_encoded(images, self.max_pixels, self.executor)
        decoding = self.decoding[artifact.key]
        if decoding.where == "replica":
            call = self.handles[artifact.key].classify_encoded.remote(images, self.max_pixels)
            return await await_replica(artifact, call)
        batch, per_image = await decode_and_preprocess_all(images, artifact.preprocessing, self.max_pixels,
                                                           self.executor, decoding.mode, decoding.budget())
        for _ in images:  # one observation per image, as the replicas count them
            self.metrics.preprocess_duration.labels(artifact.name, artifact.version).observe(per_image)
        return await self.infer(artifact, batch)
