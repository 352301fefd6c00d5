"""Ray Serve deployments behind the ingress: one Classifier per model version, one MetricsHub."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import ray
from ray import serve as ray_serve
from ray.serve.handle import DeploymentHandle

from serve.config import ModelDeployment
from serve.metrics import MetricsPusher, MetricsStore, ServeMetrics, Snapshot
from serve.runtime.decoding import Decoding
from serve.runtime.replica_grpc import bind_replica_grpc_to_configured_host
from serve.runtime.runner import ModelRunner


@ray_serve.deployment(max_ongoing_requests=1000)
class MetricsHub:
    """Sums the snapshots every replica pushes, so one scrape sees the whole application."""

    def __init__(self) -> None:
        bind_replica_grpc_to_configured_host()
        self.store = MetricsStore()

    def push(self, source: str, snapshot: Snapshot) -> None:
        self.store.update(source, snapshot)

    def render(self) -> bytes:
        return self.store.render()


@ray_serve.deployment
class Classifier:
    """One model version in a replica of its own (`runs_in: replica`): a ModelRunner behind a Ray deployment, which
    bounds its calls (max_ongoing_requests, max_queued_requests) and pushes its metrics to the hub."""

    def __init__(self, spec: ModelDeployment, repository: str, hub: DeploymentHandle, decoding: Decoding) -> None:
        bind_replica_grpc_to_configured_host()
        self.metrics = ServeMetrics()
        self.runner = ModelRunner(spec, Path(repository), decoding, self.metrics, ray.get_gpu_ids())
        self.pusher = MetricsPusher(self.metrics, lambda src, snap: hub.push.remote(src, snap))

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        self.pusher.ensure_started()
        return await self.runner.infer(images)

    async def classify_encoded(self, images: list[bytes], max_pixels: int) -> np.ndarray:
        """Decoded in this replica's worker threads, not the ingress's."""
        self.pusher.ensure_started()
        return await self.runner.classify_encoded(images, max_pixels)

    def describe(self) -> dict:
        return self.runner.describe()

    def check_health(self) -> None:
        self.runner.check_health()
