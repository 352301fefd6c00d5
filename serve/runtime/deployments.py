"""Ray Serve deployments behind the ingress: one Classifier per model version, one MetricsHub."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import ray
from ray import serve as ray_serve
from ray.serve.handle import DeploymentHandle

from serve.runtime.batcher import ContinuousBatcher
from serve.config import ModelDeployment
from serve.runtime.inference import OnnxClassifier, create_session
from serve.metrics import MetricsPusher, MetricsStore, ServeMetrics, Snapshot
from serve.runtime.decoding import Decoding
from serve.runtime.preprocess import decode_and_preprocess_all
from serve.runtime.providers import plan_providers, tensorrt_libraries_present
from serve.runtime.replica_grpc import bind_replica_grpc_to_configured_host
from serve.runtime.repository import load_artifact, verify_checksum

log = logging.getLogger(__name__)


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
    """Runs one model version with ONNX Runtime; concurrent calls are merged into batches."""

    def __init__(self, spec: ModelDeployment, repository: str, hub: DeploymentHandle, decoding: Decoding) -> None:
        bind_replica_grpc_to_configured_host()
        self.spec, self.decoding = spec, decoding
        self.artifact = load_artifact(Path(repository), spec.name, spec.version)
        verify_checksum(self.artifact)
        plan = plan_providers(spec.providers, ray.get_gpu_ids(), spec.num_cpus, ort.get_available_providers(),
                              spec.precision, tensorrt_libraries_present())
        self.model = OnnxClassifier(create_session(str(self.artifact.onnx_path), plan, spec.providers,
                                                           spec.spin_wait))
        self.providers = self.model.session.get_providers()
        self.batcher = ContinuousBatcher(self.predict_batch, spec.max_batch_size, spec.batch_wait_timeout_s)
        self.input_shape = self.artifact.preprocessing.input_shape
        self.model.predict(np.zeros((1, *self.input_shape), np.float32))  # warm up before reporting ready
        self.metrics = ServeMetrics()
        self.labels = {"model": self.artifact.name, "version": self.artifact.version}
        self.pusher = MetricsPusher(self.metrics, lambda src, snap: hub.push.remote(src, snap))
        log.info("loaded %s with %s", self.artifact.key, self.providers)

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images` (N, C, H, W); large requests are split to fit the batch limit."""
        self.pusher.ensure_started()
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"expected (N, {self.input_shape}), got {images.shape}")
        step = self.spec.max_batch_size
        chunks = [images[i:i + step] for i in range(0, len(images), step)]
        parts = await asyncio.gather(*(self.batcher.submit(chunk) for chunk in chunks))
        return np.concatenate(parts)

    async def predict_batch(self, calls: list[np.ndarray], enqueued: list[float]) -> np.ndarray:
        """One ONNX Runtime run over the images of several calls, off the event loop."""
        started = time.perf_counter()
        for t in enqueued:
            self.metrics.queue_duration.labels(**self.labels).observe(started - t)
        batch = np.concatenate(calls)
        probs = await asyncio.to_thread(self.model.predict, batch)
        self.metrics.inference_duration.labels(**self.labels).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(**self.labels).observe(len(batch))
        return probs

    async def classify_encoded(self, images: list[bytes], max_pixels: int) -> np.ndarray:
        """Decode and preprocess in this replica's worker threads (not the ingress's), then classify."""
        batch, per_image = await decode_and_preprocess_all(images, self.artifact.preprocessing, max_pixels,
                                                           decode=self.decoding.mode, budget=self.decoding.budget())
        for _ in images:
            self.metrics.preprocess_duration.labels(**self.labels).observe(per_image)
        return await self(batch)

    def describe(self) -> dict:
        return {**self.artifact.summary(), "providers": self.providers}

    def check_health(self) -> None:
        if self.model.session is None:
            raise RuntimeError("no ONNX Runtime session")
