"""A live server with one model version in the ingress (runs_in: ingress) and one in a replica of its own: the
same weights under two version numbers answer alike through both, and both are ready and described alike."""
from __future__ import annotations

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.server import LiveServer, default_config, free_port
from tests.model_versions import repository_with_versions

pytestmark = pytest.mark.integration

MODEL = "seresnet20_digits"
PLACEMENT = {"1": "ingress", "2": "replica"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> LiveServer:
    workdir = tmp_path_factory.mktemp("runs-in")
    config = default_config(free_port())
    spec = next(m for m in config["models"] if m["name"] == MODEL)
    config.update(model_repository=str(repository_with_versions(workdir / "models", MODEL, tuple(PLACEMENT))),
                  models=[{**spec, "version": v, "runs_in": where} for v, where in PLACEMENT.items()],
                  default_model=MODEL, experiment=None)
    with LiveServer(config, workdir) as live:
        yield live


def _classify(client: httpx.Client, version: str, **body) -> dict:
    answer = client.post("/classify", params={"model": f"{MODEL}/{version}", "k": 10}, **body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["version"] == version
    return answer.json()


def test_the_ingress_and_a_replica_give_identical_top_k(mixed: LiveServer) -> None:
    with httpx.Client(base_url=mixed.url, timeout=60) as client:
        for image, kind in [*((png, "image/png") for png in digit_pngs()[:4]), (jpeg_photos()[1], "image/jpeg")]:
            top = [_classify(client, v, content=image, headers={"Content-Type": kind})["predictions"] for v in PLACEMENT]
            assert top[0] == top[1]
        files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(digit_pngs()[:5])]
        assert _classify(client, "1", files=files)["results"] == _classify(client, "2", files=files)["results"]
        metrics = client.get("/metrics").text  # the ingress pushes its own, its runner's included, before rendering
    assert f'resfam_batch_size_count{{model="{MODEL}",version="1"}}' in metrics


def test_both_are_ready_and_only_the_replica_model_has_a_deployment(mixed: LiveServer) -> None:
    with httpx.Client(base_url=mixed.url, timeout=60) as client:
        for version in PLACEMENT:
            ready = client.get(f"/v2/models/{MODEL}/versions/{version}/ready")
            assert ready.status_code == 200 and ready.json() == {"name": MODEL, "ready": True}
            assert client.get(f"/v2/models/{MODEL}/versions/{version}").status_code == 200
        assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
        assert client.get(f"/v2/models/{MODEL}").json()["versions"] == ["1", "2"]
        assert [v["version"] for v in client.get(f"/models/{MODEL}").json()["versions"]] == ["1", "2"]
    assert mixed.replica_pids(f"classifier-{MODEL}-2") and not mixed.replica_pids(f"classifier-{MODEL}-1")
