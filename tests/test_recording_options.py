"""feedback.durable_answers defaults by store (on for a shared database, off for a node's SQLite file) and does
what it says; feedback.record: false keeps nothing."""
from __future__ import annotations

import asyncio

import pytest

from serve.config import load_config
from serve.metrics import ServeMetrics
from tests.conftest import ROOT, free_port
from tests.postgres import postgres_database, postgres_server  # noqa: F401 (fixtures)
from tests.test_feedback_store import PROBS, recorder_for, store_url  # noqa: F401 (fixture)


@pytest.mark.parametrize("backend, setting, durable", [
    ("sqlite", None, False), ("postgresql", None, True), ("sqlite", True, True), ("postgresql", False, False)])
def test_durable_answers_default_by_backend(tmp_path, backend, setting, durable):
    # an unreachable PostgreSQL is fine here: the recorder starts anyway and only its backend matters
    url = (f"sqlite:///{tmp_path / 'f.sqlite'}" if backend == "sqlite"
           else f"postgresql://postgres@127.0.0.1:{free_port()}/absent")
    options = {} if setting is None else {"durable_answers": setting}
    recorder = recorder_for(url, ServeMetrics(), **options)
    try:
        assert recorder.durable is durable
    finally:
        recorder.close(timeout_s=0)


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_answer_is_in_the_store_when_record_returns(store_url, durable):  # noqa: F811 (fixture)
    """With a flush interval far longer than the test, only durable_answers writes the row before returning."""
    recorder = recorder_for(store_url, ServeMetrics(), flush_interval_s=60, durable_answers=durable)
    try:
        asyncio.run(recorder.record("r1", "a", "a/1", PROBS, 0.01))
        assert (recorder.store.find("r1", 0) is not None) is durable
    finally:
        recorder.close()


def test_record_false_keeps_nothing(tmp_path):
    recorder = recorder_for(f"sqlite:///{tmp_path / 'f.sqlite'}", ServeMetrics(), record=False)
    try:
        asyncio.run(recorder.record("r1", "a", "a/1", PROBS, 0.01))
        asyncio.run(recorder.record_shadow("r1", "b", "b/1", PROBS, 0.01))
        assert recorder.buffer.rows == 0
        asyncio.run(recorder.flush(5))
        assert recorder.store.find("r1", 0) is None
    finally:
        recorder.close()


def test_the_shipped_config_leaves_durable_answers_to_the_store():
    """The image carries serve/config.yaml; on Kubernetes RESFAM_FEEDBACK_URL names PostgreSQL, so durable."""
    assert load_config(ROOT / "serve" / "config.yaml").feedback.durable_answers is None
