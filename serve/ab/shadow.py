"""Shadow mode: mirror a request to the other arms off the response path, and count agreement."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import numpy as np

from serve.ab.recorder import FeedbackRecorder
from serve.errors import Overloaded
from serve.metrics import ServeMetrics
from serve.runtime.repository import ModelArtifact

log = logging.getLogger(__name__)

Classify = Callable[[list[bytes], ModelArtifact], Awaitable[np.ndarray]]


class ShadowMirror:
    """A shadow arm's errors and latency never reach the client; they are counted by reason."""

    def __init__(self, classify: Classify, resolve: Callable[[str], ModelArtifact],
                 recorder: FeedbackRecorder, metrics: ServeMetrics) -> None:
        self.classify, self.resolve, self.recorder, self.metrics = classify, resolve, recorder, metrics
        self.tasks: set[asyncio.Task] = set()

    def start(self, request_id: str, images: list[bytes], primary: str, probs: np.ndarray,
              arms: list[str], timeout_s: float) -> None:
        """Nothing is awaited here: the tasks outlive the request that started them."""
        top1 = [int(p.argmax()) for p in probs]
        for arm in arms:
            task = asyncio.get_running_loop().create_task(self._mirror(request_id, images, primary, arm, top1,
                                                                       timeout_s))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _mirror(self, request_id: str, images: list[bytes], primary: str, arm: str, primary_top1: list[int],
                      timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            artifact = self.resolve(arm)
            probs = await asyncio.wait_for(self.classify(images, artifact), timeout_s)
        except asyncio.TimeoutError:
            self.metrics.shadow_errors.labels(arm, "timeout").inc()
            return
        except Overloaded:
            self.metrics.shadow_errors.labels(arm, "overloaded").inc()
            return
        except Exception:
            log.warning("shadow call to %s failed", arm, exc_info=True)
            self.metrics.shadow_errors.labels(arm, "error").inc()
            return
        latency = time.perf_counter() - started
        self.metrics.shadow_duration.labels(arm).observe(latency)
        for p, top1 in zip(probs, primary_top1):
            agree = "true" if int(p.argmax()) == top1 else "false"
            self.metrics.shadow_comparisons.labels(primary, arm, agree).inc()
        await self.recorder.record_shadow(request_id, arm, artifact.key, probs, latency)
