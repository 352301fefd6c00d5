"""The feedback store on SQLite and on a real PostgreSQL, and the A/B report built from it, on hand-computed
examples; its schema migrations (a file written before they existed included), the write buffer, and what
recording does while the database is down."""
from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text

from serve.ab.feedback import label_index, parse_feedback
from serve.ab.recorder import FeedbackRecorder, StoreErrors
from serve.ab.report import build_report, planning
from serve.ab.store import FeedbackStore, Prediction
from serve.config import FEEDBACK_URL_ENV, ExperimentConfig, FeedbackConfig, ServerConfig, effective_feedback_url
from serve.errors import BadParameter, BadRequest, StoreUnavailable, UnknownLabel
from serve.metrics import ServeMetrics
from tests.conftest import free_port
from tests.postgres import PostgresServer, postgres_database, postgres_server  # noqa: F401 (fixtures)

EXPERIMENT = ExperimentConfig(arms=[{"model": "a", "weight": 1}, {"model": "b", "weight": 1}], mode="shadow")
LEGACY_FILE = Path(__file__).parent / "data" / "feedback_v0.sqlite"  # written by tests/data/make_feedback_v0.py
HEAD_REVISION = "0003"  # 0003: serve/ab/rollout_store.py
BACKENDS = ["sqlite", "postgresql"]
OpenStore = Callable[..., FeedbackStore]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL: a new SQLite file, or this module's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'f.sqlite'}"
    url = request.getfixturevalue("postgres_database")
    request.getfixturevalue("postgres_server").empty(url.rsplit("/", 1)[1])
    return url


@pytest.fixture
def open_store(store_url: str) -> Iterator[OpenStore]:
    """Opens stores on `store_url` (or another URL) and closes them all after the test."""
    opened: list[FeedbackStore] = []

    def open_(max_rows: int = 1000, retention_s: float = 3600, url: str | None = None) -> FeedbackStore:
        opened.append(FeedbackStore(url or store_url, max_rows=max_rows, retention_s=retention_s))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def schema_revision(url: str) -> str:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()


def served(store: FeedbackStore, arm: str, n: int, correct: int, latency_s: float = 0.01) -> list[str]:
    """n single-image requests predicting class 1; the first `correct` get label 1, the rest label 2."""
    ids = []
    for i in range(n):
        rid = f"{arm}-{i}"
        store.record([Prediction(rid, 0, arm, f"{arm}/1", 1, 0.5 + i / (2 * n), latency_s * (i + 1))])
        assert store.add_feedback(rid, 0, 1 if i < correct else 2)
        ids.append(rid)
    return ids


def test_report_matches_the_hand_computed_example(open_store):
    store = open_store()
    served(store, "a", 10, 8)
    served(store, "b", 10, 5)
    report = build_report(store, EXPERIMENT)
    a, b = report["arms"]
    assert (a["requests"], a["feedback"], a["correct"], a["accuracy"]) == (10, 10, 8, 0.8)
    # Wilson 8/10 by hand: (0.4902, 0.9433); see tests/test_abstats.py
    assert a["accuracy_ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    # latencies 0.01..0.10: p50 = 0.055, p95 = 0.0955 (linear interpolation)
    assert a["latency_p50_s"] == pytest.approx(0.055) and a["latency_p95_s"] == pytest.approx(0.0955)
    # p95's interval among 10 (K ~ Bin(10, 0.95)): P(K <= 7) = 0.0115 <= 0.025 < P(K <= 8) = 0.0861, so the
    # lower end is the 8th smallest, 0.08; the upper end needs 72 samples
    assert a["latency_p95_ci95_s"] == [pytest.approx(0.08), None]
    assert report["planning"]["status"].startswith("waiting for 30 labels on a")
    assert a["mean_confidence"] == pytest.approx(0.725)  # 0.5 + mean(0..9)/20
    # 8/10 vs 5/10: pooled 0.65, se = sqrt(0.65 * 0.35 * 0.2) = 0.21331, z = -0.3 / 0.21331 = -1.4064, p = 0.1596
    (cmp,) = report["comparisons"]
    assert cmp["difference"] == pytest.approx(-0.3) and cmp["z"] == pytest.approx(-1.4064, abs=1e-4)
    assert cmp["p_value"] == pytest.approx(0.1596, abs=1e-4)
    assert cmp["verdict"] == "no significant difference at n=20 (p=0.16)"
    # the headline is the always-valid verdict, which a fixed-sample p of 0.16 is far from moving
    assert cmp["always_valid"]["always_valid_p_value"] > cmp["p_value"]
    assert report["verdict"] == cmp["always_valid"]["verdict"]
    assert report["verdict"].startswith("no difference can be claimed yet")
    assert report["shadow"] == []


def test_shadow_pairs_feed_mcnemar(open_store):
    store = open_store()
    ids = served(store, "a", 20, 15)  # primary right on the first 15 (label 1), wrong on the last 5 (label 2)
    # shadow predicts 1 on the first 5, 2 on the rest: it is right on ids 0-4 and 15-19
    store.record_shadow([Prediction(rid, 0, "b", "b/1", 1 if i < 5 else 2, 0.9, 0.02) for i, rid in enumerate(ids)])
    (pair,) = build_report(store, EXPERIMENT)["shadow"]
    assert (pair["compared"], pair["paired_feedback"]) == (20, 20)
    assert pair["agreement"] == pytest.approx(5 / 20)
    # b = primary only right: ids 5-14 (10); c = shadow only right: ids 15-19 (5); exact: 2 * P(X <= 5 | 15) = 0.3018
    assert (pair["b_primary_only_correct"], pair["c_shadow_only_correct"]) == (10, 5)
    assert pair["mcnemar_method"] == "exact" and pair["p_value"] == pytest.approx(0.30175781, abs=1e-8)


def test_feedback_counts_once_and_survives_reopening(open_store):
    store = open_store()
    store.record([Prediction("r1", 0, "a", "a/1", 3, 0.9, 0.01)])
    assert store.add_feedback("r1", 0, 3) and not store.add_feedback("r1", 0, 4)
    store.close()
    again = open_store()
    assert again.find("r1") == Prediction("r1", 0, "a", "a/1", 3, 0.9, 0.01)
    assert not again.add_feedback("r1", 0, 3)
    assert again.arm_outcomes("a").correct == 1 and again.find("nope") is None


def test_store_is_bounded_by_rows_and_retention(open_store):
    store = open_store(max_rows=100, retention_s=1.5)
    now = time.time()
    store.write([(now + i * 1e-4, Prediction(f"r{i}", 0, "a", "a/1", 1, 0.9, 0.01)) for i in range(150)], [])
    store.record_shadow([Prediction("r0", 0, "b", "b/1", 1, 0.9, 0.01)])
    assert store.add_feedback("r0", 0, 1) and store.add_feedback("r149", 0, 1)
    store.prune()  # the oldest 50 go, and their shadow and feedback with them
    assert store.arm_outcomes("a").requests == 100 and store.find("r49") is None and store.find("r50")
    assert store.arm_outcomes("a").feedback == 1 and store.shadow_outcomes("a", "b").compared == 0
    time.sleep(1.6)
    assert store.find("r149") is None  # expired, even before the next prune removes it
    store.prune()
    assert store.arm_outcomes("a").requests == 0


@pytest.mark.parametrize("body, error", [
    (b"not json", BadRequest), (b"[1, 2]", BadRequest), (b'{"label": 1}', BadParameter),
    (b'{"request_id": "x"}', BadParameter), (b'{"request_id": "x", "label": true}', BadParameter),
    (b'{"request_id": "x", "label": 1, "image": -1}', BadParameter),
    # found by Schemathesis: an image position past 64 bits was a 500 from the database driver
    (b'{"request_id": "x", "label": 1, "image": 209157203466440287453184}', BadParameter),
    (b'{"request_id": "x", "label": 1, "colour": 1}', BadParameter),
])
def test_bad_feedback_bodies_are_refused(body, error):
    with pytest.raises(error):
        parse_feedback(body)


def test_labels_by_name_or_index():
    labels = ["cat", "dog", "7"]
    assert label_index("dog", labels) == 1 and label_index(2, labels) == 2 and label_index("7", labels) == 2
    for bad in ("horse", 3, -1):
        with pytest.raises(UnknownLabel):
            label_index(bad, labels)


# Schema and URLs

def test_a_file_from_before_versioning_is_migrated_with_its_rows(tmp_path, open_store):
    """tests/data/feedback_v0.sqlite was written by the unversioned store of commit e1a8f7e."""
    path = tmp_path / "old.sqlite"
    shutil.copy(LEGACY_FILE, path)
    store = open_store(retention_s=100 * 365 * 86400, url=f"sqlite:///{path}")
    assert schema_revision(f"sqlite:///{path}") == HEAD_REVISION
    assert "predictions_arm_latency" in {i["name"] for i in inspect(store.engine).get_indexes("predictions")}
    assert store.find("a-0", 1) == Prediction("a-0", 1, "a", "a/1", 2, 0.8, 0.010)
    a, b = store.arm_outcomes("a"), store.arm_outcomes("b")
    # a: 4 requests (a-0 has two images), latencies 0.01-0.04 on first images; feedback a-0, a-1 right, a-2 wrong
    assert (a.requests, a.feedback, a.correct, b.requests, b.feedback, b.correct) == (4, 3, 2, 2, 1, 1)
    assert a.latency_p50_s == pytest.approx(0.025) and a.latency_p95_s == pytest.approx(0.0385)
    pair = store.shadow_outcomes("a", "b")
    assert (pair.compared, pair.agreed, pair.paired_feedback) == (2, 1, 2)
    store.record([Prediction("new", 0, "a", "a/1", 1, 0.9, 0.01)])  # and it goes on working
    assert store.arm_outcomes("a").requests == 5 and not store.add_feedback("a-0", 0, 1)


def test_replicas_starting_together_migrate_once(store_url):
    """Several replicas opening one empty database at once: each waits its turn (advisory lock on PostgreSQL,
    an immediate transaction on SQLite), none fails, and the schema ends at the newest revision."""
    errors: list[BaseException] = []
    stores: list[FeedbackStore] = []

    def start() -> None:
        try:
            stores.append(FeedbackStore(store_url, max_rows=1000, retention_s=3600))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 4
    assert schema_revision(store_url) == HEAD_REVISION


def test_feedback_url_from_config_path_or_environment(tmp_path, monkeypatch):
    models = [{"name": "m", "version": "1"}]
    assert ServerConfig(models=models).feedback_url(tmp_path) == f"sqlite:///{tmp_path}/.state/feedback.sqlite"
    relative = ServerConfig(models=models, feedback={"url": "sqlite:///db/f.sqlite"})
    assert relative.feedback_url(tmp_path) == f"sqlite:///{tmp_path}/db/f.sqlite"
    shared = ServerConfig(models=models, feedback={"url": "postgresql://ab@db:5432/ab", "path": "ignored"})
    assert shared.feedback_url(tmp_path) == "postgresql://ab@db:5432/ab"
    monkeypatch.delenv(FEEDBACK_URL_ENV, raising=False)
    assert effective_feedback_url("sqlite:///x") == "sqlite:///x"
    monkeypatch.setenv(FEEDBACK_URL_ENV, "postgresql://ab@elsewhere/ab?sslmode=require")
    assert effective_feedback_url("sqlite:///x") == "postgresql://ab@elsewhere/ab?sslmode=require"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_store_urls_are_refused(url):
    with pytest.raises(ValueError, match="feedback store"):
        FeedbackStore(url, max_rows=1000, retention_s=3600)


# Recording through the buffer

def recorder_for(url: str, metrics: ServeMetrics, **options: float) -> FeedbackRecorder:
    return FeedbackRecorder(FeedbackStore(url, max_rows=100_000, retention_s=3600), metrics,
                            FeedbackConfig(**options))


def sample(metrics: ServeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


PROBS = np.array([[0.1, 0.7, 0.2]])


def test_feedback_finds_a_prediction_another_replica_has_not_written_yet(store_url):
    """Replica A answers and buffers the row (written within its flush interval); replica B gets the feedback:
    B looks again until the row arrives instead of answering 404. An id nobody answered is 404 after the wait."""
    a = recorder_for(store_url, ServeMetrics(), flush_interval_s=0.5, durable_answers=False)
    b = recorder_for(store_url, ServeMetrics(), feedback_wait_s=2.0)

    async def scenario() -> None:
        await a.record("from-a", "a", "a/1", PROBS, 0.01)
        started = time.monotonic()
        found = await b.find("from-a", 0)
        assert found is not None and found.predicted == 1 and time.monotonic() - started < 2.0
        started = time.monotonic()
        assert await b.find("nobody", 0) is None and time.monotonic() - started >= 2.0

    try:
        asyncio.run(scenario())
    finally:
        a.close(), b.close()


def test_a_full_buffer_drops_and_counts_instead_of_blocking(store_url):
    metrics = ServeMetrics()
    # a flush interval longer than the test, answers not durable: nothing leaves the buffer until close() writes it
    recorder = recorder_for(store_url, metrics, buffer_rows=10, flush_interval_s=60, durable_answers=False)

    async def scenario() -> None:
        started = time.monotonic()
        for i in range(25):
            await recorder.record(f"r{i}", "a", "a/1", PROBS, 0.01)
        assert time.monotonic() - started < 0.5

    asyncio.run(scenario())
    assert sample(metrics, "resfam_feedback_rows_dropped_total", reason="buffer_full") == 15
    assert recorder.close() == 0
    store = FeedbackStore(store_url, max_rows=1000, retention_s=3600)
    assert store.arm_outcomes("a").requests == 10 and store.find("r9") and store.find("r10") is None
    store.close()


def test_store_errors_are_counted_each_and_logged_once_per_interval(caplog):
    metrics = ServeMetrics()
    errors = StoreErrors(metrics, every_s=60)
    with caplog.at_level(logging.WARNING, logger="serve.ab.recorder"):
        for _ in range(100):
            errors.failed("record", ConnectionError("refused"))
    assert sample(metrics, "resfam_feedback_store_errors_total", operation="record") == 100
    assert len(caplog.records) == 1


def test_postgres_stopping_and_returning_mid_recording(postgres_server: PostgresServer, postgres_database):
    """While PostgreSQL is down: recording never raises and never waits, failures are counted, the buffer
    keeps what fits and drops (counted) the rest; feedback and the report answer store_unavailable. Within
    seconds of its return, without a restart, the buffered rows are written and everything works."""
    postgres_server.empty(postgres_database.rsplit("/", 1)[1])
    metrics = ServeMetrics()
    recorder = recorder_for(postgres_database, metrics, buffer_rows=100, flush_interval_s=0.05)

    async def record(prefix: str, n: int) -> None:
        for i in range(n):
            started = time.monotonic()
            await recorder.record(f"{prefix}-{i}", "a", "a/1", PROBS, 0.01)
            assert time.monotonic() - started < 0.5  # a database down takes 3 s to refuse a connection
            await asyncio.sleep(0.002)

    async def eventually(check: Callable[[], object], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not check():
            assert time.monotonic() < deadline, "not within the time allowed"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        await record("before", 50)
        assert await recorder.flush(5) == 0
        postgres_server.stop()
        try:
            await record("down", 200)
            await eventually(lambda: sample(metrics, "resfam_feedback_store_errors_total", operation="record"), 5)
            with pytest.raises(StoreUnavailable):
                await recorder.report(EXPERIMENT)
            with pytest.raises(StoreUnavailable):
                await recorder.find("before-0", 0)
        finally:
            postgres_server.start()
        await eventually(lambda: recorder.buffer.rows == 0, 5)  # the rows held through the outage
        await record("after", 50)
        assert await recorder.flush(5) == 0
        report = await recorder.report(EXPERIMENT)
        # 50 before + the 100 the buffer held through the outage + 50 after; the other 100 were dropped
        assert report["arms"][0]["requests"] == 200
        assert sample(metrics, "resfam_feedback_rows_dropped_total", reason="buffer_full") == 100
        assert await recorder.find("down-0", 0) is not None and await recorder.find("after-49", 0) is not None

    try:
        asyncio.run(scenario())
    finally:
        recorder.close()


def test_a_database_down_at_start_is_not_an_outage():
    """The replica starts anyway (the schema is migrated once the database answers); recording goes on,
    feedback and the report answer store_unavailable, and shutdown counts what it could not write."""
    metrics = ServeMetrics()
    recorder = recorder_for(f"postgresql://postgres@127.0.0.1:{free_port()}/absent", metrics, flush_interval_s=0.05)

    async def scenario() -> None:
        await recorder.record("r1", "a", "a/1", PROBS, 0.01)
        with pytest.raises(StoreUnavailable):
            await recorder.report(EXPERIMENT)
        with pytest.raises(StoreUnavailable):
            await recorder.find("r1", 0)

    asyncio.run(scenario())
    assert recorder.close(timeout_s=0.5) == 1
    assert sample(metrics, "resfam_feedback_rows_dropped_total", reason="shutdown") == 1
    assert sample(metrics, "resfam_feedback_store_errors_total", operation="report") == 1


def test_planning_uses_the_baseline_accuracy_and_the_feedback_rate_seen():
    """90% on the baseline, 0.02 to detect, 2,000 labels over 1,000 s: the fixed plan is the two-proportion
    formula's 3,213 per arm (tests/test_sequential.py checks the formula by hand), at 2 labels/s 53.6 min."""
    from serve.ab.store import ArmOutcomes

    experiment = ExperimentConfig(arms=[{"model": "a", "weight": 50}, {"model": "b", "weight": 50}], min_difference=0.02)
    baseline = ArmOutcomes("a", 1000, 0.9, 0.01, 0.02, 1000, 900)
    planned = planning(experiment, [baseline], (2000, 1000.0, 2000.0))
    assert planned["status"] == "planned" and planned["rate_labels_per_s"] == 2.0
    assert planned["fixed"]["labels_per_arm"] == [3213, 3213]
    assert planned["fixed"]["seconds"] == pytest.approx(3213 / 1.0)
    assert planned["sequential"]["mean_labels"] > 0
    nearly_perfect = ArmOutcomes("a", 1000, 0.9, 0.01, 0.02, 1000, 995)  # no room above: plans for a loss
    assert planning(experiment, [nearly_perfect], (2000, 1000.0, 2000.0))["min_difference"] == -0.02
