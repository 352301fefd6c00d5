"""The in-process ceilings the cpu-resnet50 benchmark compares the server with, on the shipped digits model."""
from pathlib import Path

import numpy as np
import pytest

from loadtests.inprocess import measure, measure_with_decoding, session_for
from loadtests.photos import digit_pngs
from serve.runtime.repository import load_artifact

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def digits():
    artifact = load_artifact(MODELS, "seresnet20_digits", "1")
    return session_for(artifact, "cpu", 1, []), artifact.preprocessing


def test_measure_reports_batch_throughput(digits):
    model, spec = digits
    figure = measure(model, spec.input_shape, 4, 0.2)
    assert figure.batch == 4 and figure.images_per_s > 0 and figure.latency_ms > 0


def test_with_decoding_runs_the_server_preprocessing_on_every_image(digits, monkeypatch):
    model, spec = digits
    seen = []
    real_predict = model.predict

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return real_predict(batch)

    monkeypatch.setattr(model, "predict", predict)
    rate = measure_with_decoding(model, spec, list(digit_pngs(8)), 0.3, in_flight=4, max_batch_size=3)
    assert rate > 0
    assert all(1 <= len(b) <= 3 and b.shape[1:] == spec.input_shape and b.dtype == np.float32 for b in seen)
    assert len(seen) > 2


def test_with_decoding_raises_what_decoding_raises(digits):
    model, spec = digits
    with pytest.raises(Exception, match="not an image"):
        measure_with_decoding(model, spec, [b"not an image at all"], 0.2)
