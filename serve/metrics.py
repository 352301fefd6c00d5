"""Prometheus metrics: every replica records locally and pushes snapshots to one hub.

A scrape of /metrics must cover all replicas on all nodes, so replicas push cumulative
snapshots of their private registries to the MetricsHub deployment, which sums them.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

# Sub-millisecond to seconds: CPU models answer in a few ms to a few hundred ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075,
                   0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

Snapshot = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]
# Gauges every replica sets to the same cluster-wide value: merged by their maximum, not summed.
SHARED_GAUGES = frozenset({"resfam_rollout_weight"})


class ServeMetrics:
    """The resfam_* metrics of one process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        request_labels = ["model", "version", "arm", "route", "code"]
        model_labels = ["model", "version"]
        self.request_duration = Histogram(
            "resfam_request_duration_seconds", "Time from request arrival to answer, by outcome.",
            request_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("resfam_requests_total", "Requests answered, by outcome.", request_labels, registry=r)
        self.images = Counter("resfam_images_total", "Images classified.", model_labels, registry=r)
        self.preprocess_duration = Histogram(
            "resfam_preprocess_duration_seconds", "Decode and preprocessing time per image.",
            model_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "resfam_queue_duration_seconds", "Time an image waited in its model's batcher before its batch ran.",
            model_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "resfam_inference_duration_seconds", "Model execution time per batch.",
            model_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "resfam_batch_size", "Images per executed batch.", model_labels, buckets=BATCH_BUCKETS, registry=r)
        self.confidence = Histogram(
            "resfam_prediction_confidence", "Top-1 score of each answered image.",
            ["model", "arm"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.feedback = Counter(
            "resfam_feedback_total", "Feedback received on served predictions.", ["model", "arm", "correct"], registry=r)
        self.shadow_comparisons = Counter(
            "resfam_shadow_comparisons_total", "Shadow-mode images whose shadow top-1 agreed with the primary's.",
            ["primary", "arm", "agree"], registry=r)
        self.shadow_errors = Counter(
            "resfam_shadow_errors_total", "Shadow calls that failed; the client never sees them.",
            ["arm", "reason"], registry=r)
        self.shadow_duration = Histogram(
            "resfam_shadow_duration_seconds", "Time a shadow arm took, off the response path.",
            ["arm"], buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("resfam_inflight_requests", "Requests being handled now.", registry=r)
        self.client_timeouts = Counter(
            "resfam_client_timeouts_total", "Requests cut off because the client was too slow (408), by stage.",
            ["stage"], registry=r)
        self.client_limited = Counter(
            "resfam_client_limited_total", "Requests refused (429): their client address had "
            "http.max_inflight_per_client requests in flight.", registry=r)
        self.client_connections_refused = Counter(
            "resfam_client_connections_refused_total", "Connections Ray's proxy closed on accept: their client "
            "address held http.max_connections_per_client.", registry=r)
        self.client_requests = Counter(
            "resfam_client_requests_total", "Requests by API key name ('-': none sent or needed), scope and status.",
            ["client", "scope", "code"], registry=r)
        self.feedback_store_errors = Counter(
            "resfam_feedback_store_errors_total", "Feedback store operations that failed (database down or "
            "erroring); classification goes on.", ["operation"], registry=r)
        self.feedback_rows_dropped = Counter(
            "resfam_feedback_rows_dropped_total", "Prediction rows never stored: the write buffer was full, "
            "a write failed for good, or shutdown came first.", ["reason"], registry=r)
        self.feedback_buffer_rows = Gauge(
            "resfam_feedback_buffer_rows", "Prediction rows waiting in memory for their write.", registry=r)
        self.rollout_weight = Gauge(
            "resfam_rollout_weight", "Each arm's weight in percent under the experiment's guarded rollout.",
            ["experiment", "arm"], registry=r)
        self.rollout_decisions = Counter(
            "resfam_rollout_decisions_total", "Rollout decisions: advance, rollback and complete by the replica "
            "whose decision was stored, hold by every replica that held.", ["experiment", "action"], registry=r)

    def snapshot(self) -> Snapshot:
        families = []
        for family in self.registry.collect():
            samples = [(s.name, dict(s.labels), float(s.value)) for s in family.samples if not s.name.endswith("_created")]
            families.append((family.name, family.type, family.documentation, samples))
        return families


def merge_snapshots(snapshots: list[Snapshot]) -> bytes:
    """Sum every sample across sources and render Prometheus text."""
    merged: dict[str, tuple[str, str, dict[tuple, float], dict[tuple, tuple[str, dict]]]] = {}
    for snapshot in snapshots:
        for name, typ, doc, samples in snapshot:
            _, _, values, keys = merged.setdefault(name, (typ, doc, {}, {}))
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels.items())))
                values[key] = (max(values.get(key, value), value) if name in SHARED_GAUGES
                               else values.get(key, 0.0) + value)
                keys[key] = (sample_name, labels)

    class _Merged:
        def collect(self):
            for name, (typ, doc, values, keys) in sorted(merged.items()):
                metric = Metric(name, doc, typ)
                for key in sorted(values, key=_sample_order):
                    sample_name, labels = keys[key]
                    metric.add_sample(sample_name, labels, values[key])
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


def _sample_order(key: tuple) -> tuple:
    sample_name, labels = key
    plain = tuple((k, v) for k, v in labels if k != "le")
    le = dict(labels).get("le")
    return (plain, sample_name, float(le) if le is not None else 0.0)


class MetricsStore:
    """Latest cumulative snapshot per source; gauges of silent sources are dropped."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self._sources: dict[str, tuple[float, Snapshot]] = {}
        self._stale_after_s = stale_after_s

    def update(self, source: str, snapshot: Snapshot) -> None:
        self._sources[source] = (time.monotonic(), snapshot)

    def render(self) -> bytes:
        now = time.monotonic()
        snapshots = []
        for seen, snapshot in self._sources.values():
            if now - seen > self._stale_after_s:
                snapshot = [f for f in snapshot if f[1] != "gauge"]
            snapshots.append(snapshot)
        return merge_snapshots(snapshots)


def source_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class MetricsPusher:
    """Pushes this process's snapshot to the hub every `interval_s` while the replica lives."""

    def __init__(self, metrics: ServeMetrics, push: Callable[[str, Snapshot], Awaitable[Any]],
                 interval_s: float = 0.5) -> None:
        self._metrics, self._push, self._interval_s = metrics, push, interval_s
        self._task: asyncio.Task | None = None
        self._source = source_id()

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def push_now(self) -> None:
        await self._push(self._source, self._metrics.snapshot())

    async def _loop(self) -> None:
        last: Snapshot | None = None
        while True:
            snapshot = self._metrics.snapshot()
            if snapshot != last:
                try:
                    await self._push(self._source, snapshot)
                    last = snapshot
                except Exception:  # the hub restarting must not stop the replica
                    pass
            await asyncio.sleep(self._interval_s)
