"""Figures for the feedback store on SQLite and PostgreSQL (run with -m bench, under the heavy-job lock):
predictions/s the recorder's writer sustains, what record() costs the /classify path (against the old
awaited write), and the report's time at 1 M stored predictions.

    flock /tmp/resfam-heavy.lock .venv/bin/python -m pytest -m bench -s -p no:cacheprovider tests/test_feedback_bench.py
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tqdm import tqdm

from serve.ab.recorder import FeedbackRecorder, prediction_rows
from serve.ab.report import build_report
from serve.ab.store import FEEDBACK, FeedbackStore, Prediction
from serve.config import ExperimentConfig, FeedbackConfig
from serve.metrics import ServeMetrics
from tests.test_feedback_store import open_store, store_url  # noqa: F401 (fixtures)
from tests.postgres import postgres_database, postgres_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.bench
EXPERIMENT = ExperimentConfig(arms=[{"model": "a", "weight": 1}, {"model": "b", "weight": 1}], mode="shadow")
PROBS = np.array([[0.1, 0.7, 0.2]])
RECORDED = 50_000
REPORT_ROWS = 1_000_000
FILL_BATCH = 20_000


def test_recorder_throughput_and_cost_on_the_request_path(store_url):
    store = FeedbackStore(store_url, max_rows=10 * RECORDED, retention_s=3600)
    # the buffer's own throughput: answers not durable (tests/test_recording_options.py, loadtests recording)
    recorder = FeedbackRecorder(store, ServeMetrics(), FeedbackConfig(buffer_rows=RECORDED, durable_answers=False))

    async def record_all() -> float:
        started = time.perf_counter()
        for i in range(RECORDED):
            await recorder.record(f"r{i}", "a", "a/1", PROBS, 0.01)
        return time.perf_counter() - started

    started = time.perf_counter()
    calls_s = asyncio.run(record_all())
    assert recorder.buffer.flush(120)
    written_s = time.perf_counter() - started
    assert store.arm_outcomes("a").requests == RECORDED

    # what the request path paid before: an awaited one-row transaction on the store's thread
    executor = ThreadPoolExecutor(max_workers=1)

    async def awaited_writes(n: int) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for i in range(n):
            rows = prediction_rows(f"w{i}", "a", "a/1", PROBS, 0.01)
            await loop.run_in_executor(executor, store.record, rows)
        return time.perf_counter() - started

    awaited_n = 2000
    awaited_s = asyncio.run(awaited_writes(awaited_n))
    recorder.close()
    backend = store_url.split(":", 1)[0]
    print(f"\n[{backend}] {RECORDED} predictions through the recorder: written at {RECORDED / written_s:,.0f}/s; "
          f"record() {1e6 * calls_s / RECORDED:.1f} us per call on the request path, against "
          f"{1e6 * awaited_s / awaited_n:.0f} us for an awaited one-row write")


def fill(store: FeedbackStore, n: int) -> None:
    """n single-image predictions over two arms, feedback on every tenth, b shadowing a on every tenth of a's."""
    rng = np.random.default_rng(0)
    now = time.time()
    with tqdm(total=n, desc=f"filling {store.backend}", unit="row") as bar:
        for start in range(0, n, FILL_BATCH):
            ids = range(start, min(n, start + FILL_BATCH))
            latency = rng.gamma(2.0, 0.01, len(ids))
            predicted = rng.integers(0, 10, len(ids))
            rows = [(now + i * 1e-6, Prediction(f"r{i}", 0, "ab"[i % 2], "ab"[i % 2] + "/1", int(predicted[k]),
                                                 0.5, float(latency[k]))) for k, i in enumerate(ids)]
            shadows = [Prediction(p.request_id, 0, "b", "b/1", (p.predicted + i // 20) % 10, 0.5, p.latency_s)
                       for i, (_, p) in zip(ids, rows) if i % 20 == 0]
            store.write(rows, shadows)
            with store.engine.begin() as connection:
                connection.execute(FEEDBACK.insert(), [{"request_id": p.request_id, "image": 0, "label": i % 10,
                                                        "created": now} for i, (_, p) in zip(ids, rows) if i % 10 == 0])
            bar.update(len(ids))


def test_report_time_at_a_million_predictions(open_store):
    store = open_store(max_rows=2 * REPORT_ROWS, retention_s=86400)
    fill(store, REPORT_ROWS)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        report = build_report(store, EXPERIMENT)
        times.append(time.perf_counter() - started)
    a, b = report["arms"]
    assert a["requests"] + b["requests"] == REPORT_ROWS and report["shadow"][0]["compared"] == REPORT_ROWS // 20
    print(f"\n[{store.backend}] GET /ab/report at {REPORT_ROWS:,} predictions: "
          f"{', '.join(f'{t:.2f}' for t in times)} s (p50 {a['latency_p50_s'] * 1000:.1f} ms)")
