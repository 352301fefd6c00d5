"""Real Prometheus (Debian's package) scrapes the live app with deploy/'s scrape config; PromQL answers."""
import math
import time

import httpx
import pytest

from deploy.dashboard import RATE, latency_quantile, queries
from tests.conftest import LiveServer
from tests.images import photo_bytes
from tests.prometheus_process import MISSING, prometheus_binary, query, running_prometheus, scrape_config

pytestmark = pytest.mark.integration

WINDOW = "1m"


@pytest.fixture(scope="module")
def prometheus(server: LiveServer, tmp_path_factory):
    if prometheus_binary() is None:
        pytest.skip(MISSING)
    config = scrape_config(f"127.0.0.1:{server.port}", ray_targets=[])
    with running_prometheus(config, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def models_served(client: httpx.Client) -> list[str]:
    return sorted({m["name"] for m in client.get("/models").json()["models"]})


@pytest.fixture(scope="module")
def traffic(client: httpx.Client, prometheus: str) -> list[str]:
    """Good requests to every model and a few bad ones, spread over several scrapes."""
    models = models_served(client)
    image = photo_bytes("chelsea.png")
    for _ in range(6):
        for model in models:
            for _ in range(3):
                ok = client.post("/classify", params={"model": model}, content=image,
                                 headers={"Content-Type": "image/png"})
                assert ok.status_code == 200, ok.text
        bad = client.post("/classify", content=b"not an image", headers={"Content-Type": "image/png"})
        assert bad.status_code == 400
        time.sleep(1)
    time.sleep(3)  # two more scrapes after the last request
    return models


def test_p95_latency_per_model_from_histogram_quantile(prometheus, traffic):
    promql = latency_quantile(0.95).replace(RATE, WINDOW)
    by_model = {}
    for series in query(prometheus, promql):
        value = float(series["value"][1])
        if math.isfinite(value):
            by_model.setdefault(series["metric"].get("model", ""), []).append((series["metric"].get("arm", ""), value))
    print(f"\np95 latency per model and arm: {by_model}")
    for model in traffic:
        assert by_model.get(model), f"no finite p95 for {model}: {by_model}"
        assert all(0 < value < 30 for _, value in by_model[model])


def test_every_dashboard_query_runs_and_the_app_panels_have_data(prometheus, traffic):
    empty = [promql for promql in queries() if not query(prometheus, promql.replace(RATE, WINDOW))]
    # Only the GPU panel may be empty: this machine has no GPU and Ray's node metrics are not scraped here.
    assert [q for q in empty if "ray_node_gpus" not in q] == []
