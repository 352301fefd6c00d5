"""One model version run by ONNX Runtime in this process: the one implementation behind a Classifier replica and
behind a model that runs in the ingress (`runs_in: ingress`), so both placements answer alike."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnxruntime as ort
import ray

from serve.config import ModelDeployment
from serve.errors import Overloaded
from serve.metrics import ServeMetrics
from serve.runtime.batcher import ContinuousBatcher
from serve.runtime.decoding import Decoding
from serve.runtime.inference import OnnxClassifier, create_session
from serve.runtime.preprocess import decode_and_preprocess_all
from serve.runtime.providers import plan_providers, tensorrt_libraries_present
from serve.runtime.repository import load_artifact, verify_checksum

log = logging.getLogger(__name__)


def max_ongoing_requests(spec: ModelDeployment) -> int:
    """Room for four full batches per replica, queued in its own batcher (FIFO, woken at once). Beyond that
    requests wait (bounded) in the caller's handle queue, which behind HAProxy drains slowly (digits model with
    max_batch_size 1, so 8 slots, at c=32: 28 requests/s, loadtests/results/batching; 105 with http.proxy: ray)."""
    return max(4 * spec.max_batch_size, 8)


def admission_bound(spec: ModelDeployment) -> int:
    """The calls a model takes at once before refusing: what Ray gives a replica (ongoing plus queued)."""
    return max_ongoing_requests(spec) + spec.max_queued_requests


def at_capacity(key: str) -> Overloaded:
    return Overloaded(f"model {key} is at capacity; retry shortly")


class ModelRunner:
    """Loads and checks the artifact, opens its session on the providers this process was given, warms it up and
    batches concurrent calls. Observes into `metrics` (its replica's, or the ingress's). With `admit`, at most that
    many calls run or wait at once and the next is refused (Overloaded); without it the caller bounds them (Ray)."""

    def __init__(self, spec: ModelDeployment, repository: Path, decoding: Decoding, metrics: ServeMetrics,
                 gpu_ids: Sequence, admit: int | None = None) -> None:
        self.spec, self.decoding, self.metrics, self.admit = spec, decoding, metrics, admit
        self.artifact = load_artifact(Path(repository), spec.name, spec.version)
        verify_checksum(self.artifact)
        plan = plan_providers(spec.providers, list(gpu_ids), spec.num_cpus, ort.get_available_providers(),
                              spec.precision, tensorrt_libraries_present())
        self.model = OnnxClassifier(create_session(str(self.artifact.onnx_path), plan, spec.providers,
                                                   spec.spin_wait))
        self.providers = self.model.session.get_providers()
        self.batcher = ContinuousBatcher(self.predict_batch, spec.max_batch_size, spec.batch_wait_timeout_s)
        self.input_shape = self.artifact.preprocessing.input_shape
        self.model.predict(np.zeros((1, *self.input_shape), np.float32))  # warm up before reporting ready
        self.labels = {"model": self.artifact.name, "version": self.artifact.version}
        self.calls = 0
        log.info("loaded %s with %s", self.artifact.key, self.providers)

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        if self.admit is not None and self.calls >= self.admit:
            raise at_capacity(self.artifact.key)
        self.calls += 1
        try:
            yield
        finally:
            self.calls -= 1

    async def infer(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images` (N, C, H, W); large requests are split to fit the batch limit."""
        with self._admitted():
            return await self._infer(images)

    async def classify_encoded(self, images: list[bytes], max_pixels: int,
                               executor: Executor | None = None) -> np.ndarray:
        """Decode and preprocess in `executor`'s threads (default: the event loop's), then classify; while they
        decode, a batch that is not full may wait for these images (ContinuousBatcher.expecting)."""
        with self._admitted():
            with self.batcher.expecting():
                batch, per_image = await decode_and_preprocess_all(images, self.artifact.preprocessing, max_pixels,
                                                                   executor, self.decoding.mode,
                                                                   self.decoding.budget())
            for _ in images:
                self.metrics.preprocess_duration.labels(**self.labels).observe(per_image)
            return await self._infer(batch)

    async def _infer(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"expected (N, {self.input_shape}), got {images.shape}")
        step = self.spec.max_batch_size
        chunks = [images[i:i + step] for i in range(0, len(images), step)]
        # queued at once, in the step that ended their decoding (ContinuousBatcher.expecting)
        parts = await asyncio.gather(*[self.batcher.enqueue(chunk) for chunk in chunks])
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

    def describe(self) -> dict:
        return {**self.artifact.summary(), "providers": self.providers}

    def check_health(self) -> None:
        if self.model.session is None:
            raise RuntimeError(f"{self.artifact.key}: no ONNX Runtime session")


def local_runners(specs: Mapping[str, ModelDeployment], repository: Path, decoding: Mapping[str, Decoding],
                  metrics: ServeMetrics) -> dict[str, ModelRunner]:
    """The runners of the models that run in this (ingress) process, each bounded as a replica would be, on the
    GPUs Ray gave the process."""
    gpu_ids = ray.get_gpu_ids() if specs else []
    return {key: ModelRunner(spec, repository, decoding[key], metrics, gpu_ids, admit=admission_bound(spec))
            for key, spec in specs.items()}
