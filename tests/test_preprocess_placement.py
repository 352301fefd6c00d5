"""Preprocessing in the replica gives the same answers as preprocessing in the ingress, errors included."""
from __future__ import annotations

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.server import LiveServer, default_config, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica_server(tmp_path_factory) -> LiveServer:
    config = default_config(free_port())
    for model in config["models"]:
        model["preprocess_in"] = "replica"
    live = LiveServer(config, tmp_path_factory.mktemp("replica-server"))
    live.start()
    yield live
    live.stop()


def _predictions(url: str, image: bytes, model: str) -> list[dict]:
    answer = httpx.post(f"{url}/classify", content=image, headers={"Content-Type": "image/png"},
                        params={"model": model, "k": 10}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


@pytest.mark.parametrize("model", ["seresnet20_digits", "resnext20_digits"])
def test_both_placements_give_identical_predictions(server: LiveServer, replica_server: LiveServer, model: str) -> None:
    for image in [*digit_pngs()[:4], jpeg_photos()[1]]:
        assert _predictions(replica_server.url, image, model) == _predictions(server.url, image, model)


def test_multi_image_request_in_replica_keeps_order(server: LiveServer, replica_server: LiveServer) -> None:
    files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(digit_pngs()[:5])]
    answers = [httpx.post(f"{url}/classify", files=files, timeout=60) for url in (server.url, replica_server.url)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["results"] == answers[1].json()["results"]


def test_bad_image_decoded_in_replica_is_a_400(replica_server: LiveServer) -> None:
    truncated = jpeg_photos()[0][:2000]
    answer = httpx.post(f"{replica_server.url}/classify", content=truncated,
                        headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_image"
    assert _predictions(replica_server.url, digit_pngs()[0], "seresnet20_digits")  # the replica still serves
