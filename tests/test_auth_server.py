"""API keys on a live server: what each key may do, probes open, rotation by SIGHUP, keys never logged."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from loadtests.server import LiveServer, default_config, free_port
from tests.images import encode
from tests.test_auth import CLASSIFIER, LABELLER, bearer

pytestmark = pytest.mark.integration
ROTATED = {**CLASSIFIER, "key": "k-rotated-9876543210"}
LOCUST = {"name": "locust", "key": "k-locust-5555555555", "scopes": ["classify"]}  # kept through the rotation


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> LiveServer:
    workdir = tmp_path_factory.mktemp("auth-server")
    (workdir / "keys.json").write_text(json.dumps([CLASSIFIER, LABELLER, LOCUST]))
    config = default_config(free_port())
    config["auth"] = {"keys_file": str(workdir / "keys.json")}
    with LiveServer(config, workdir) as live:
        yield live


@pytest.fixture(scope="module")
def png() -> bytes:
    from resfam.data import digits

    return encode(digits("test")[0][0], "PNG")


def test_each_key_may_do_what_its_scopes_say(keyed: LiveServer, png: bytes):
    with httpx.Client(base_url=keyed.url, timeout=60) as client:
        refused = client.post("/classify", content=png)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        answer = client.post("/classify", content=png, headers=bearer(CLASSIFIER))
        assert answer.status_code == 200
        feedback = {"request_id": answer.json()["request_id"], "label": 0}
        assert client.post("/feedback", json=feedback, headers=bearer(CLASSIFIER)).status_code == 403
        assert client.post("/feedback", json=feedback, headers=bearer(LABELLER)).status_code == 200
        assert client.get("/ab/report", headers=bearer(CLASSIFIER)).status_code == 403
        assert client.get("/ab/report", headers=bearer(LABELLER)).status_code == 200
        assert client.get("/models").status_code == 401
        assert client.get("/v2/health/ready").status_code == 200 and client.get("/v2/health/live").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'resfam_client_requests_total{client="batch-job",code="200",scope="classify"}' in metrics.text


def test_tritonclient_sends_the_key_it_is_given(keyed: LiveServer):
    client = triton.InferenceServerClient(keyed.url.removeprefix("http://"))
    batch = np.zeros((1, 1, 32, 32), np.float32)
    inp = triton.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=True)
    with pytest.raises(InferenceServerException):
        client.infer("seresnet20_digits", [inp])
    probs = client.infer("seresnet20_digits", [inp], headers=bearer(CLASSIFIER)).as_numpy("probabilities")
    assert probs.shape == (1, 10)


def test_keys_rotate_on_sighup_and_are_never_logged(keyed: LiveServer, png: bytes):
    (keyed.workdir / "keys.json").write_text(json.dumps([ROTATED, LABELLER, LOCUST]))
    keyed.reload(keyed.config)
    with httpx.Client(base_url=keyed.url, timeout=60) as client:
        assert client.post("/classify", content=png, headers=bearer(CLASSIFIER)).status_code == 401
        assert client.post("/classify", content=png, headers=bearer(ROTATED)).status_code == 200
    logs = keyed.log_path.read_text()
    assert not any(entry["key"] in logs for entry in (CLASSIFIER, LABELLER, ROTATED, LOCUST))


def test_locust_sends_the_key_it_is_given(keyed: LiveServer, tmp_path):
    from tests.test_locustfile import run_locust

    with_key = run_locust(keyed.url, tmp_path, RESFAM_API_KEY=LOCUST["key"])
    assert int(with_key["Aggregated"]["Failure Count"]) == 0 and int(with_key["Aggregated"]["Request Count"]) > 5
