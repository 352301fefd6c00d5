"""ModelRunner on a shipped model, in the test process: what a Classifier replica and an in-ingress model both run."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import onnxruntime as ort
import pytest

from loadtests.photos import digit_pngs
from loadtests.server import ROOT
from serve.config import ModelDeployment
from serve.errors import Overloaded
from serve.metrics import ServeMetrics
from serve.runtime.decoding import Decoding
from serve.runtime.inference import softmax
from serve.runtime.preprocess import decode_and_preprocess_all
from serve.runtime.runner import ModelRunner, admission_bound

MODEL = "seresnet20_digits"
DECODING = Decoding("replica", "fast", 64 << 20, 1.0)


def runner(admit: int | None = None, **spec: object) -> ModelRunner:
    return ModelRunner(ModelDeployment(name=MODEL, version="1", providers="cpu", **spec), ROOT / "models", DECODING,
                       ServeMetrics(), gpu_ids=[], admit=admit)


@pytest.fixture
def session_probs():
    """A runner (its batcher belongs to the one event loop a test runs it on) and probabilities from a plain ONNX
    Runtime session over the same model: what the runner must answer."""
    plain = runner()
    session = ort.InferenceSession(str(plain.artifact.onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return plain, lambda batch: softmax(session.run(None, {name: batch})[0])


def test_probabilities_are_the_sessions_across_batch_chunks(session_probs):
    model, direct = session_probs
    batch = np.random.default_rng(0).standard_normal((20, *model.input_shape)).astype(np.float32)  # 16 + 4
    probs = asyncio.run(model.infer(batch))
    np.testing.assert_allclose(probs, direct(batch), rtol=1e-5, atol=1e-6)
    sizes = model.metrics.registry.get_sample_value("resfam_batch_size_sum", model.labels)
    assert sizes == 20


def test_encoded_images_decode_as_the_ingress_would_and_match_the_session(session_probs):
    model, direct = session_probs
    pngs = digit_pngs()[:3]
    probs = asyncio.run(model.classify_encoded(pngs, 40_000_000))
    batch, _ = asyncio.run(decode_and_preprocess_all(pngs, model.artifact.preprocessing, 40_000_000, decode="fast"))
    np.testing.assert_allclose(probs, direct(batch), rtol=1e-5, atol=1e-6)
    assert model.metrics.registry.get_sample_value("resfam_preprocess_duration_seconds_count", model.labels) == 3
    assert model.describe()["providers"] == ["CPUExecutionProvider"]


def test_a_lone_encoded_call_does_not_wait_for_itself():
    """A call counts as on its way while it decodes; once its images are queued nothing else is expected, so its
    batch runs at once rather than after batch_wait_timeout_s (the shipped 5 ms; here the largest the config allows, 1 s)."""
    model = runner(batch_wait_timeout_s=1.0)
    probs = asyncio.run(model.classify_encoded(digit_pngs()[:1], 40_000_000))
    assert probs.shape == (1, 10)
    waited = model.metrics.registry.get_sample_value("resfam_queue_duration_seconds_sum", model.labels)
    assert waited < 0.5


def test_calls_beyond_the_bound_are_refused_and_the_rest_served():
    spec = {"max_batch_size": 1, "max_queued_requests": 1}
    bound = admission_bound(ModelDeployment(name=MODEL, **spec))
    assert bound == 8 + 1  # what Ray gives a replica: max(4 x 1, 8) ongoing + 1 queued
    model = runner(admit=bound, **spec)
    predict = model.model.predict
    model.model.predict = lambda batch: (time.sleep(0.02), predict(batch))[1]  # slow: every call is still held
    image = np.zeros((1, *model.input_shape), np.float32)

    async def burst() -> tuple[list, np.ndarray]:
        outcomes = await asyncio.gather(*(model.infer(image) for _ in range(bound + 3)), return_exceptions=True)
        return outcomes, await model.infer(image)

    outcomes, after = asyncio.run(burst())
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(refused) == 3 and all(o.status == 503 for o in refused)
    served = [o for o in outcomes if not isinstance(o, Overloaded)]
    assert len(served) == bound and all(isinstance(o, np.ndarray) and o.shape == (1, 10) for o in served)
    assert model.calls == 0 and after.shape == (1, 10)  # the slots came back


def test_health_fails_without_a_session():
    model = runner()
    model.check_health()
    model.model.session = None
    with pytest.raises(RuntimeError, match="no ONNX Runtime session"):
        model.check_health()
