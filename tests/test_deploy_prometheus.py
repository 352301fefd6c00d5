"""Real Prometheus (Debian's package) scrapes the live app with deploy/'s scrape config; PromQL answers."""
import math
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.dashboard import RATE, latency_quantile, queries
from tests.conftest import LiveServer, free_port
from tests.images import photo_bytes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
WINDOW = "1m"


def scrape_config_for(app_port: int) -> dict:
    """deploy/'s scrape config, pointed at the live server and scraping every second."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    app_job = next(job for job in config["scrape_configs"] if job["job_name"] == "resfam-app")
    app_job["static_configs"] = [{"targets": [f"127.0.0.1:{app_port}"]}]
    # The live server's Ray metrics port is Ray's choice (and 8080 here may be another user's), so only the app.
    config["scrape_configs"] = [app_job]
    return config


@pytest.fixture(scope="module")
def prometheus(server: LiveServer, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus; .ci/run does it)")
    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(scrape_config_for(server.port)))
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={url.removeprefix('http://')}", "--log.level=warn"],
        stdout=(workdir / "log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"prometheus not ready:\n{(workdir / 'log').read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(prometheus: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", f"{promql}: {answer}"
    return answer["data"]["result"]


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
