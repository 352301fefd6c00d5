"""Open Inference Protocol: unit tests of the messages, and the real tritonclient against the server."""
from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from serve.errors import BadParameter, BadRequest
from serve.api.oip import parse_infer_request
from tests.images import encode, photo_bytes

SHAPE = (1, 32, 32)


def _body(inputs, outputs=None) -> bytes:
    return json.dumps({"id": "r1", "inputs": inputs, **({"outputs": outputs} if outputs else {})}).encode()


def test_parse_json_tensor():
    data = np.arange(2 * 32 * 32, dtype=np.float32)
    req = parse_infer_request(_body([{"name": "input", "datatype": "FP32", "shape": [2, 1, 32, 32],
                                      "data": data.tolist()}]), None, SHAPE, 10)
    assert req.tensor.shape == (2, 1, 32, 32) and req.id == "r1" and req.class_count == 0
    np.testing.assert_array_equal(req.tensor.ravel(), data)


def test_parse_binary_bytes_with_classification():
    images = [photo_bytes("coffee.png"), photo_bytes("rocket.jpg")]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = _body([{"name": "images", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}],
                   [{"name": "probabilities", "parameters": {"classification": 3}}])
    req = parse_infer_request(header + raw, str(len(header)), SHAPE, 10)
    assert req.images == images and req.class_count == 3


def test_json_bytes_are_base64():
    png = photo_bytes("coffee.png")
    req = parse_infer_request(_body([{"name": "images", "datatype": "BYTES", "shape": [1],
                                      "data": [base64.b64encode(png).decode()]}]), None, SHAPE, 10)
    assert req.images == [png]


@pytest.mark.parametrize(
    "inputs, outputs, error",
    [
        ([{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}], None, BadRequest),
        ([{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0.0] * 5}], None, BadRequest),
        ([{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": ["NaN"] * 1024}], None, BadRequest),
        ([{"name": "other", "datatype": "FP32", "shape": [1], "data": [0.0]}], None, BadRequest),
        ([{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}], None, BadRequest),
        ([], None, BadRequest),
        ([{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}],
         [{"name": "probabilities", "parameters": {"classification": 11}}], BadParameter),
        ([{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}], [{"name": "logits"}], BadRequest),
    ],
)
def test_malformed_requests(inputs, outputs, error):
    with pytest.raises(error):
        parse_infer_request(_body(inputs, outputs), None, SHAPE, 10)


def test_header_length_that_does_not_fit():
    with pytest.raises(BadRequest):
        parse_infer_request(b"{}", "999", SHAPE, 10)


@pytest.mark.integration
class TestTritonClient:
    @pytest.fixture(scope="class")
    def triton_client(self, server):
        return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)

    def test_health_and_metadata(self, triton_client):
        assert triton_client.is_server_live() and triton_client.is_server_ready()
        assert triton_client.is_model_ready("seresnet20_digits")
        meta = triton_client.get_model_metadata("seresnet20_digits")
        assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"input": "FP32", "images": "BYTES"}
        assert meta["outputs"][0]["shape"] == [-1, 10]

    def test_unknown_model(self, triton_client):
        assert not triton_client.is_model_ready("nope")
        with pytest.raises(triton.InferenceServerException):
            triton_client.get_model_metadata("nope")

    def test_bytes_input_matches_classify(self, triton_client, client):
        from resfam.data import digits

        pngs = [encode(digits("test")[i][0], "PNG") for i in range(3)]
        inp = triton.InferInput("images", [len(pngs)], "BYTES")
        inp.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
        out = triton.InferRequestedOutput("probabilities", class_count=2)
        result = triton_client.infer("seresnet20_digits", [inp], outputs=[out]).as_numpy("probabilities")
        assert result.shape == (3, 2)
        for png, row in zip(pngs, result):
            expected = client.post("/classify", content=png, params={"k": 2}).json()["predictions"]
            got = [(r.decode() if isinstance(r, bytes) else r).split(":") for r in row]
            assert [(int(i), lab) for _, i, lab in got] == [(p["index"], p["label"]) for p in expected]
            assert abs(float(got[0][0]) - expected[0]["score"]) < 1e-5

    @pytest.mark.parametrize("binary", [True, False])
    def test_tensor_input_gives_probabilities(self, triton_client, binary):
        batch = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
        inp = triton.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)
        probs = triton_client.infer("resnext20_digits", [inp], model_version="1").as_numpy("probabilities")
        assert probs.shape == (4, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
