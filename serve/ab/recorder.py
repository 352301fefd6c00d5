"""What the experiment remembers: served and shadow predictions, feedback on them, the report.

Recording never waits for the database: rows go into a bounded buffer that a thread writes in batches
(serve.ab.buffer). Reads (/feedback, the report) run on worker threads; when the database is down they answer
503 store_unavailable, while /classify goes on answering and the buffer holds or drops rows, counted.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

from serve.ab.buffer import WriteBuffer
from serve.ab.database import is_transient
from serve.ab.feedback import FeedbackRequest, label_index
from serve.ab.report import build_report
from serve.ab.store import FeedbackStore, Prediction, Stamped
from serve.config import ExperimentConfig, FeedbackConfig
from serve.errors import StoreUnavailable, UnknownRequest
from serve.metrics import ServeMetrics
from serve.runtime.catalog import ModelCatalog

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH_ROWS = 500
LOG_EVERY_S = 30.0
FEEDBACK_FLUSH_S = 1.0  # /feedback and the report wait at most this for this replica's own buffer
FIND_POLL_S = 0.1
DURABLE_WAITERS = 64


def prediction_rows(request_id: str, arm: str, model_key: str, probs: np.ndarray,
                    latency_s: float) -> list[Prediction]:
    return [Prediction(request_id, i, arm, model_key, int(p.argmax()), float(p.max()), latency_s)
            for i, p in enumerate(probs)]


class StoreErrors:
    """Counts every failure by operation; logs the first, then at most one line per interval with how many
    followed, so an outage does not flood the log."""

    def __init__(self, metrics: ServeMetrics, every_s: float = LOG_EVERY_S) -> None:
        self.metrics, self.every_s = metrics, every_s
        self._lock = threading.Lock()
        self._last_logged = -float("inf")
        self._unlogged = 0

    def failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.feedback_store_errors.labels(operation).inc()
        with self._lock:
            now = time.monotonic()
            if now - self._last_logged < self.every_s:
                self._unlogged += 1
                return
            self._last_logged, suppressed, self._unlogged = now, self._unlogged, 0
        log.warning("feedback store %s failed: %s: %s (%d more failures since the last report)",
                    operation, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", suppressed)


class FeedbackRecorder:
    def __init__(self, store: FeedbackStore, metrics: ServeMetrics, options: FeedbackConfig | None = None) -> None:
        options = options or FeedbackConfig()
        self.store, self.metrics, self.options = store, metrics, options
        self.durable = options.durable_answers if options.durable_answers is not None else store.backend != "sqlite"
        self.errors = StoreErrors(metrics)
        self.buffer = WriteBuffer(
            self._write, capacity_rows=options.buffer_rows, batch_rows=BATCH_ROWS,
            interval_s=options.flush_interval_s, transient=is_transient,
            on_error=lambda exc: self.errors.failed("record", exc),
            on_dropped=lambda reason, rows: metrics.feedback_rows_dropped.labels(reason).inc(rows),
            on_depth=metrics.feedback_buffer_rows.set)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="feedback-store")
        # durable_answers: requests wait here for their batch's commit (one commit serves all waiting then)
        self.waiters = ThreadPoolExecutor(max_workers=DURABLE_WAITERS, thread_name_prefix="feedback-durable")

    def _write(self, items: Sequence[tuple[str, float, list[Prediction]]]) -> None:
        predictions: list[Stamped] = [(t, p) for kind, t, rows in items if kind == "served" for p in rows]
        shadows = [p for kind, _, rows in items if kind == "shadow" for p in rows]
        self.store.write(predictions, shadows)

    async def _in_store(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.errors.failed(operation, exc)
            raise StoreUnavailable("the feedback store is unavailable; retry shortly") from None

    async def record(self, request_id: str, arm: str, model_key: str, probs: np.ndarray, latency_s: float) -> None:
        """Keep what was answered, so that feedback can be scored later (by any replica, after restarts).
        Never fails classification: a row the buffer cannot take is dropped, counted. Waits only with
        durable_answers (bounded, and not while the database is failing), so that a lost node loses no answer."""
        if not self.options.record:
            return
        rows = prediction_rows(request_id, arm, model_key, probs, latency_s)
        seq = self.buffer.put(("served", time.time(), rows), len(rows))
        if seq is not None and self.durable:
            await asyncio.get_running_loop().run_in_executor(
                self.waiters, self.buffer.flush, self.options.durable_wait_s, seq)

    async def record_shadow(self, request_id: str, arm: str, model_key: str, probs: np.ndarray,
                            latency_s: float) -> None:
        if not self.options.record:
            return
        rows = prediction_rows(request_id, arm, model_key, probs, latency_s)
        self.buffer.put(("shadow", time.time(), rows), len(rows))

    async def find(self, request_id: str, image: int) -> Prediction | None:
        """This replica's buffer is written first; a prediction another replica answered may still sit in that
        replica's buffer (at most flush_interval_s when its database is up), so an unknown id is looked up
        again for up to feedback_wait_s before it is called unknown. Only unknown ids pay that wait."""
        await self._flush_own()
        deadline = time.monotonic() + self.options.feedback_wait_s
        while True:
            served = await self._in_store("find", self.store.find, request_id, image)
            if served is not None or time.monotonic() >= deadline:
                return served
            await asyncio.sleep(FIND_POLL_S)

    async def score(self, given: FeedbackRequest, catalog: ModelCatalog) -> dict[str, Any]:
        """The first feedback per image counts, repeats do not; the label is checked against the model that
        answered, which need not be loaded any more."""
        served = await self.find(given.request_id, given.image)
        if served is None:
            raise UnknownRequest(f"no retained prediction with request_id {given.request_id!r} "
                                 f"and image {given.image} (unknown, or older than the retention)")
        artifact = catalog.served_or_archived(served.model)
        index = label_index(given.label, artifact.labels)
        counted = await self._in_store("add_feedback", self.store.add_feedback, given.request_id, given.image, index)
        correct = index == served.predicted
        if counted:
            self.metrics.feedback.labels(artifact.name, served.arm, str(correct).lower()).inc()
        return {"request_id": given.request_id, "image": given.image, "arm": served.arm or None,
                "label": artifact.labels[index], "index": index, "correct": correct, "counted": counted}

    async def report(self, experiment: ExperimentConfig | None) -> dict[str, Any]:
        """Counts everything this replica answered before the call (its buffer is written first); other
        replicas' rows count once their buffers are written, within their flush interval."""
        await self._flush_own()
        return await self._in_store("report", build_report, self.store, experiment)

    async def _flush_own(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.buffer.flush, FEEDBACK_FLUSH_S)

    async def flush(self, timeout_s: float) -> int:
        """Write what is buffered (drain: the replica is about to go); returns the rows still unwritten."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.buffer.flush, timeout_s)
        return self.buffer.rows

    def close(self, timeout_s: float = 5.0) -> int:
        """Write what is buffered (bounded), then let go of the database; returns the rows lost."""
        left = self.buffer.close(timeout_s)
        self.executor.shutdown(wait=False)
        self.waiters.shutdown(wait=False)
        self.store.close()
        return left
