"""Integration: the real server with the shipped models, real images, real HTTP."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resfam.data import digits
from tests.conftest import ROOT
from tests.images import PHOTOS, encode, photo_bytes

pytestmark = pytest.mark.integration
MODELS = ["seresnet20_digits", "resnext20_digits"]


def recorded(name: str) -> dict:
    (meta_path,) = sorted((ROOT / "models" / name).glob("*/model.json"))[-1:]
    return json.loads(meta_path.read_text())


def metric_samples(client: httpx.Client) -> dict:
    out: dict = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and labels.items() <= dict(lab).items())


def post_image(client: httpx.Client, data: bytes, **params) -> httpx.Response:
    return client.post("/classify", content=data, params=params, headers={"Content-Type": "image/png"})


@pytest.mark.parametrize("name", MODELS)
def test_held_out_digits_classified_at_recorded_accuracy(client, name):
    meta = recorded(name)
    test = digits("test", seed=meta["metrics"]["split_seed"])
    payloads = [encode(test[i][0], "PNG") for i in range(len(test))]

    def classify(data: bytes) -> int:
        r = post_image(client, data, model=name, k=1)
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]["index"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        predicted = list(pool.map(classify, payloads))
    accuracy = sum(p == t for p, t in zip(predicted, test.targets)) / len(test)
    assert abs(accuracy - meta["metrics"]["test_top1"]) <= 0.02, (accuracy, meta["metrics"])


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_photos_get_well_formed_answers(client, path):
    r = client.post("/classify", files={"file": (path.name, path.read_bytes())}, params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["request_id"]) == 32
    # No model named: the shipped 50/50 experiment answers, and says which arm it chose.
    assert body["arm"] in MODELS and body["model"] == {"name": body["arm"], "version": "1", "arch": recorded(body["arm"])["arch"]}
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert all(p["label"] == str(p["index"]) for p in body["predictions"])


@pytest.mark.parametrize("k", [1, 5, 10])
def test_k_controls_the_number_of_predictions(client, k):
    assert len(post_image(client, photo_bytes(), k=k).json()["predictions"]) == k


def test_default_k_is_five(client):
    assert len(post_image(client, photo_bytes()).json()["predictions"]) == 5


def test_model_by_name_and_by_version(client):
    by_name = post_image(client, photo_bytes(), model="resnext20_digits").json()
    by_version = post_image(client, photo_bytes(), model="resnext20_digits/1").json()
    assert by_name["model"]["arch"] == "resnext20_4x8d" and by_version["model"] == by_name["model"]
    assert by_name["predictions"] == by_version["predictions"]


def test_multi_image_request_answers_in_order(client):
    test = digits("test", seed=recorded("seresnet20_digits")["metrics"]["split_seed"])
    files = [("file", (f"{i}.png", encode(test[i][0], "PNG"), "image/png")) for i in range(4)]
    body = client.post("/classify", files=files, params={"k": 1}).json()
    singles = [post_image(client, f[1][1], k=1).json()["predictions"] for f in files]
    assert [r["predictions"] for r in body["results"]] == singles


@pytest.mark.parametrize(
    "request_kwargs, status, code",
    [
        ({"content": b""}, 400, "bad_image"),
        ({"content": b"GIF89a but not really an image"}, 400, "bad_image"),
        ({"content": b"\x00\x01\x02" * 100}, 400, "bad_image"),
        ({"content": photo_bytes("coffee.png")[:5000]}, 400, "bad_image"),
        ({"content": photo_bytes("rocket.jpg")[:4000]}, 400, "bad_image"),
        ({"content": photo_bytes(), "params": {"model": "nope"}}, 404, "model_not_found"),
        ({"content": photo_bytes(), "params": {"model": "seresnet20_digits/7"}}, 404, "model_not_found"),
        ({"content": photo_bytes(), "params": {"model": "../models/seresnet20_digits"}}, 404, "model_not_found"),
        ({"content": photo_bytes(), "params": {"k": "0"}}, 422, "bad_parameter"),
        ({"content": photo_bytes(), "params": {"k": "-3"}}, 422, "bad_parameter"),
        ({"content": photo_bytes(), "params": {"k": "11"}}, 422, "bad_parameter"),
        ({"content": photo_bytes(), "params": {"k": "five"}}, 422, "bad_parameter"),
        ({"files": {"image": ("a.png", photo_bytes())}}, 400, "bad_request"),
    ],
)
def test_errors_are_json_with_the_right_status(client, request_kwargs, status, code):
    r = client.post("/classify", **request_kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_bad_requests_do_not_harm_replicas(client):
    before = post_image(client, photo_bytes("chelsea.png"), k=10).json()["predictions"]
    bad = [b"", b"junk", photo_bytes("coffee.png")[:5000]] * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda d: post_image(client, d).status_code, bad))
    assert set(statuses) == {400}
    assert post_image(client, photo_bytes("chelsea.png"), k=10).json()["predictions"] == before


def test_concurrent_requests_are_batched(client):
    def batches_over_one(samples):
        return total(samples, "resfam_batch_size_count") - total(samples, "resfam_batch_size_bucket", le="1.0")

    before = batches_over_one(metric_samples(client))
    data = photo_bytes("camera.png")
    with ThreadPoolExecutor(max_workers=32) as pool:
        assert set(pool.map(lambda _: post_image(client, data).status_code, range(128))) == {200}
    deadline = time.monotonic() + 10
    while batches_over_one(metric_samples(client)) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert batches_over_one(metric_samples(client)) > before


def test_metrics_count_the_requests_sent(client):
    labels = dict(model="resnext20_digits", version="1", route="/classify")
    before = metric_samples(client)
    for _ in range(7):
        assert post_image(client, photo_bytes(), model="resnext20_digits").status_code == 200
    for _ in range(3):
        assert post_image(client, b"junk", model="resnext20_digits").status_code == 400
    after = metric_samples(client)  # the ingress pushes its own counts before rendering
    delta = lambda name, **extra: total(after, name, **labels, **extra) - total(before, name, **labels, **extra)  # noqa: E731
    assert delta("resfam_requests_total", code="200") == 7
    assert delta("resfam_requests_total", code="400") == 3
    assert delta("resfam_request_duration_seconds_count") == 10
    images = lambda s: total(s, "resfam_images_total", model="resnext20_digits")  # noqa: E731
    assert images(after) - images(before) == 7


def test_models_endpoint_lists_both_with_metadata(client):
    body = client.get("/models").json()
    assert {m["name"] for m in body["models"]} == set(MODELS)
    for m in body["models"]:
        assert m["metadata"]["labels"] == [str(d) for d in range(10)]
        assert m["metadata"]["metrics"]["test_top1"] >= 0.97
    one = client.get("/models/resnext20_digits").json()
    assert one["versions"][0]["arch"] == "resnext20_4x8d"
    assert client.get("/models/nope").status_code == 404


def test_unknown_route_is_json_404(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
