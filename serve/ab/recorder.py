"""What the experiment remembers: served and shadow predictions, feedback on them, the report.

The store is blocking (SQLite), so every call runs on one worker thread of its own: the event loop
never waits on the disk, and the store sees one caller at a time.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

from serve.ab.feedback import FeedbackRequest, label_index
from serve.ab.report import build_report
from serve.ab.store import FeedbackStore, Prediction
from serve.config import ExperimentConfig
from serve.errors import UnknownRequest
from serve.metrics import ServeMetrics
from serve.runtime.catalog import ModelCatalog

log = logging.getLogger(__name__)
T = TypeVar("T")


def prediction_rows(request_id: str, arm: str, model_key: str, probs: np.ndarray,
                    latency_s: float) -> list[Prediction]:
    return [Prediction(request_id, i, arm, model_key, int(p.argmax()), float(p.max()), latency_s)
            for i, p in enumerate(probs)]


class FeedbackRecorder:
    def __init__(self, store: FeedbackStore, metrics: ServeMetrics) -> None:
        self.store, self.metrics = store, metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-store")

    async def _in_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def record(self, request_id: str, arm: str, model_key: str, probs: np.ndarray, latency_s: float) -> None:
        """Keep what was answered, so that feedback can be scored later (by any replica, after restarts).
        A full disk must not fail classification: feedback for a lost row gets 404."""
        try:
            await self._in_store(self.store.record, prediction_rows(request_id, arm, model_key, probs, latency_s))
        except Exception:
            log.exception("could not record predictions of %s", request_id)

    async def record_shadow(self, request_id: str, arm: str, model_key: str, probs: np.ndarray,
                            latency_s: float) -> None:
        try:
            await self._in_store(self.store.record_shadow,
                                 prediction_rows(request_id, arm, model_key, probs, latency_s))
        except Exception:
            log.exception("could not record shadow predictions of %s", request_id)

    async def score(self, given: FeedbackRequest, catalog: ModelCatalog) -> dict[str, Any]:
        """The first feedback per image counts, repeats do not; the label is checked against the model that
        answered, which need not be loaded any more."""
        served = await self._in_store(self.store.find, given.request_id, given.image)
        if served is None:
            raise UnknownRequest(f"no retained prediction with request_id {given.request_id!r} "
                                 f"and image {given.image} (unknown, or older than the retention)")
        artifact = catalog.served_or_archived(served.model)
        index = label_index(given.label, artifact.labels)
        counted = await self._in_store(self.store.add_feedback, given.request_id, given.image, index)
        correct = index == served.predicted
        if counted:
            self.metrics.feedback.labels(artifact.name, served.arm, str(correct).lower()).inc()
        return {"request_id": given.request_id, "image": given.image, "arm": served.arm or None,
                "label": artifact.labels[index], "index": index, "correct": correct, "counted": counted}

    async def report(self, experiment: ExperimentConfig | None) -> dict[str, Any]:
        return await self._in_store(build_report, self.store, experiment)
