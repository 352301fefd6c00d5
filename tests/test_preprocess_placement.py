"""Preprocessing in the ingress before a replica call gives the same answers as the shipped server, whose models run
in the ingress (runs_in: ingress), errors included."""
from __future__ import annotations

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.server import LiveServer, default_config, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ingress_server(tmp_path_factory) -> LiveServer:
    config = default_config(free_port())
    for model in config["models"]:
        model.update(runs_in="replica", preprocess_in="ingress")
    live = LiveServer(config, tmp_path_factory.mktemp("ingress-server"))
    live.start()
    yield live
    live.stop()


def _predictions(url: str, image: bytes, model: str) -> list[dict]:
    answer = httpx.post(f"{url}/classify", content=image, headers={"Content-Type": "image/png"},
                        params={"model": model, "k": 10}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


@pytest.mark.parametrize("model", ["seresnet20_digits", "resnext20_digits"])
def test_both_placements_give_identical_predictions(server: LiveServer, ingress_server: LiveServer, model: str) -> None:
    for image in [*digit_pngs()[:4], jpeg_photos()[1]]:
        assert _predictions(ingress_server.url, image, model) == _predictions(server.url, image, model)


def test_multi_image_request_keeps_order_in_both_placements(server: LiveServer, ingress_server: LiveServer) -> None:
    files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(digit_pngs()[:5])]
    answers = [httpx.post(f"{url}/classify", files=files, params={"model": "seresnet20_digits"}, timeout=60)
               for url in (server.url, ingress_server.url)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["results"] == answers[1].json()["results"]


def test_a_bad_image_is_a_400_in_both_placements(server: LiveServer, ingress_server: LiveServer) -> None:
    truncated = jpeg_photos()[0][:2000]
    for live in (server, ingress_server):
        answer = httpx.post(f"{live.url}/classify", content=truncated,
                            headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_image"
        assert _predictions(live.url, digit_pngs()[0], "seresnet20_digits")  # the model still serves
