"""A real Prometheus (Debian's package) for tests, scraping with deploy/prometheus/prometheus.yml."""
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
MISSING = "prometheus is not installed (apt-get install prometheus; .ci/run does it)"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def scrape_config(app_target: str, ray_targets: list[str]) -> dict:
    """deploy/'s scrape config aimed at these targets, scraping every second; a job left without targets
    is dropped (port 8080 here may be someone else's Ray)."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    targets = {"resfam-app": [app_target], "ray": ray_targets}
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": targets[job["job_name"]]}]}
        for job in config["scrape_configs"] if targets[job["job_name"]]]
    return config


@contextmanager
def running_prometheus(config: dict, workdir: Path) -> Iterator[str]:
    """Prometheus on a free port with a throw-away storage dir; yields its URL and stops it afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = workdir / "prometheus.log"
    process = subprocess.Popen(
        [prometheus_binary() or "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={url.removeprefix('http://')}",
         "--log.level=warn"],
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"prometheus did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str) -> list[dict]:
    """An instant query's result vector; a PromQL error fails the caller."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", f"{promql}: {answer}"
    return answer["data"]["result"]
