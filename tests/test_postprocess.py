import numpy as np
import pytest

from serve.errors import BadParameter
from serve.runtime.inference import softmax
from serve.runtime.postprocess import parse_k, top_k


@pytest.mark.parametrize("raw", ["0", "-1", "11", "abc", "1.5", "", "99999999999999999999"])
def test_bad_k_is_422(raw):
    with pytest.raises(BadParameter) as err:
        parse_k(raw, num_classes=10)
    assert err.value.status == 422


def test_k_default_and_bounds():
    assert parse_k(None, 10) == 5
    assert parse_k(None, 3) == 3
    assert parse_k("10", 10) == 10


def test_top_k_sorted_with_labels_and_indices():
    probs = np.array([0.1, 0.5, 0.05, 0.35])
    assert top_k(probs, 2, list("abcd")) == [
        {"label": "b", "index": 1, "score": 0.5},
        {"label": "d", "index": 3, "score": 0.35},
    ]


def test_softmax_is_stable_and_normalised():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]], np.float32))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]], rtol=1e-6)
