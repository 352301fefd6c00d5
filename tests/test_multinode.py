"""A real two-node Ray cluster on loopback: replicas on both nodes, the second node dies, traffic goes on.

Each node is a `ray start --block` process group this test owns, so stopping one kills only its own
raylet and workers (other users' Ray processes on the machine are never touched).
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import ray
import yaml
from ray import serve as ray_serve
from ray._private.authentication_test_utils import reset_auth_token_state
from ray._private.state import actors

from deploy.serve_config import serve_config
from deploy.variants import VARIANTS
from serve.cluster.app import classifier_deployments
from serve.config import load_config, parse_config
from serve.cluster.ray_env import local_haproxy_ports, serve_environment, spare_ports

from tests.conftest import free_port
from tests.images import photo_bytes
from tests.prometheus_process import MISSING, prometheus_binary, query, running_prometheus, scrape_config
from deploy.dashboard import RATE, latency_quantile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
MODEL = "seresnet20_digits"
REPLICAS = 3
REPLICA_CPUS = 0.5
CONCURRENCY = 4
APP_CONFIG = {
    "model_repository": str(ROOT / "models"),
    "default_model": MODEL,
    "models": [{"name": MODEL, "replicas": REPLICAS, "num_cpus": REPLICA_CPUS, "max_batch_size": 8}],
    # Deployed through app_builder like a RayService, which refuses to serve without API keys unless told:
    # this cluster lives on loopback and is about node loss, not keys (tests/test_auth*.py are).
    "auth": "none",
}
# Faster node-death detection than the production defaults (3 s x 5), so the test runs in seconds.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                      "RAY_health_check_failure_threshold": "3"}


def pids_under(temp_dir: Path) -> list[int]:
    """Processes whose command line names this test's own Ray temp dir (raylet, gcs, workers)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(temp_dir).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


class RayNode:
    """One `ray start --block` node in its own process group."""

    def __init__(self, temp_dir: Path, args: list[str], log: Path) -> None:
        self.temp_dir = temp_dir  # one per node, so its processes can be told apart by their command line
        temp_dir.mkdir()
        node_manager, object_manager, self.metrics_port, agent, agent_grpc, runtime_env = spare_ports(6)
        command = [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
                   "--node-ip-address=127.0.0.1", f"--node-manager-port={node_manager}",
                   f"--object-manager-port={object_manager}", f"--metrics-export-port={self.metrics_port}",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--runtime-env-agent-port={runtime_env}", *args]
        # PYTHONPATH: replicas import serve.cluster.app:app_builder from this checkout (the image pip-installs it).
        # The front door's flags, as the rendered pod spec sets them (deploy/manifests.py).
        front_door = serve_environment(load_config(ROOT / "serve" / "config.yaml").on_cluster().http.proxy)
        env = {**os.environ, **FAST_HEALTH_CHECKS, **front_door, **local_haproxy_ports(http_port=0),
               "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def family(self) -> list[int]:
        """This node's process and all its descendants, also those that started a session of their own."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children.get(pid, []))
        return found

    def kill(self) -> None:
        members = self.family() + pids_under(self.temp_dir)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


@dataclass
class Traffic:
    """CONCURRENCY clients posting images in a loop; every answer is logged with its time."""

    url: str
    results: list[tuple[float, int, float]] = field(default_factory=list)  # (answered at, status, seconds)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        return threads

    def _client(self) -> None:
        image = photo_bytes("coffee.png")
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    status = client.post("/classify", content=image, headers={"Content-Type": "image/png"}).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((time.monotonic(), status, time.monotonic() - sent))

    def between(self, start: float, end: float) -> list[int]:
        return [status for t, status, _ in list(self.results) if start <= t < end]

    def slowest(self, start: float, end: float) -> float:
        return round(max((took for t, _, took in list(self.results) if start <= t < end), default=0.0), 2)


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5, explain=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} {explain()}")


def serve_status() -> str:
    return str(ray_serve.status())


def replica_nodes() -> list[str]:
    """Node ids of the classifier's live replica actors (from the GCS: this cluster runs no dashboard)."""
    (deployment, _, _), = classifier_deployments(parse_config(APP_CONFIG), ROOT / "models")
    name = f"ServeReplica:resfam:{deployment}"
    return [a["Address"]["NodeID"] for a in actors().values()
            if a["ActorClassName"] == name and a["State"] == "ALIVE"]


def running_replicas() -> int:
    app = ray_serve.status().applications.get("resfam")
    if app is None:
        return 0
    return sum(status.replica_states.get("RUNNING", 0)
               for name, status in app.deployments.items() if name.startswith("classifier-"))


@contextmanager
def own_token_auth(token: Path):
    """Ray's token authentication, as in production, with a token of this test's own (not ~/.ray's).

    Ray caches the auth mode when it is imported, so the cache is refreshed on the way in and out.
    """
    token.write_text(secrets.token_hex(32))
    settings = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    reset_auth_token_state()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_auth_token_state()


@pytest.fixture
def cluster():
    temp_dir = Path(tempfile.mkdtemp(prefix="rfmn", dir="/tmp"))  # short: Ray's socket paths have a length limit
    with own_token_auth(temp_dir / "auth_token"):
        yield from start_cluster(temp_dir)


def start_cluster(temp_dir: Path):
    gcs_port, client_port = spare_ports(2)
    head = RayNode(temp_dir / "h", ["--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                              "--include-dashboard=false", "--num-cpus=2", '--resources={"head": 1}'],
                   temp_dir / "head.log")
    second = None
    try:
        address = f"127.0.0.1:{gcs_port}"
        wait_for(lambda: subprocess.run([RAY, "status", f"--address={address}"], capture_output=True).returncode == 0,
                 120, "the head node")
        second = RayNode(temp_dir / "w", [f"--address={address}", "--num-cpus=1", '--resources={"node2": 1}'],
                         temp_dir / "node2.log")
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 120, "the second node to join")
        yield {"head": head, "second": second, "address": address, "workdir": temp_dir}
    finally:
        if ray.is_initialized():
            try:
                ray_serve.shutdown()
            finally:
                ray.shutdown()
        for node in (second, head):
            if node is not None:
                node.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def deploy_rendered_config(address: str, http_port: int, workdir: Path) -> None:
    """Deploy as KubeRay does: the serve config rendered by deploy/ (cpu variant), applied by Ray Serve."""
    (workdir / "app.yaml").write_text(yaml.safe_dump(APP_CONFIG))
    rendered = serve_config(parse_config(APP_CONFIG), str(workdir / "app.yaml"), VARIANTS["cpu"], ROOT)
    # Loopback only: one proxy on the head (both "nodes" share this machine's address and could not
    # both bind the port) and a free port instead of 8000. The application part is as rendered.
    rendered.update(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    (workdir / "serve.yaml").write_text(yaml.safe_dump(rendered))
    done = subprocess.run([str(Path(RAY).with_name("serve")), "run", f"--address={address}", "--non-blocking",
                           str(workdir / "serve.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_second_node_dies_traffic_goes_on_and_replicas_reschedule(cluster):
    node_ids = {("node2" if "node2" in n["Resources"] else "head"): n["NodeID"] for n in ray.nodes() if n["Alive"]}
    http_port = free_port()
    deploy_rendered_config(cluster["address"], http_port, cluster["workdir"])
    placement = wait_for(lambda: nodes if len(nodes := replica_nodes()) == REPLICAS else None,
                         180, f"{REPLICAS} live replicas", explain=serve_status)
    assert node_ids["node2"] in placement and node_ids["head"] in placement, f"replicas not spread: {placement}"

    head, second = cluster["head"], cluster["second"]
    targets = {"head": f"127.0.0.1:{head.metrics_port}", "node2": f"127.0.0.1:{second.metrics_port}"}
    monitoring = (running_prometheus(scrape_config(f"127.0.0.1:{http_port}", list(targets.values())),
                                     cluster["workdir"] / "prometheus") if prometheus_binary() else nullcontext())
    with monitoring as prometheus:
        figures = serve_through_node_loss(http_port, placement, node_ids, second, prometheus, targets)
    print("\nmulti-node figures: " + json.dumps(figures))
    if prometheus is None:
        print(f"Prometheus checks skipped: {MISSING}")


def ray_targets_up(prometheus: str) -> dict[str, float]:
    return {s["metric"]["instance"]: float(s["value"][1]) for s in query(prometheus, 'up{job="ray"}')}


def serve_through_node_loss(http_port: int, placement: list[str], node_ids: dict[str, str], second: RayNode,
                            prometheus: str | None, targets: dict[str, str]) -> dict:
    """Traffic, then the second node dies; what clients, Ray Serve and Prometheus saw."""
    traffic = Traffic(f"http://127.0.0.1:{http_port}")
    started = time.monotonic()
    threads = traffic.run()
    time.sleep(10)
    if prometheus:  # deploy/'s scrape config reaches Ray's metrics on both nodes
        wait_for(lambda: ray_targets_up(prometheus) == {t: 1.0 for t in targets.values()}, 30,
                 "Prometheus to scrape Ray's metrics on both nodes", explain=lambda: str(ray_targets_up(prometheus)))
    killed_at = time.monotonic()
    on_second = placement.count(node_ids["node2"])
    second.kill()
    wait_for(lambda: not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == node_ids["node2"]),
             60, "Ray to mark the second node dead")
    node_dead_s = time.monotonic() - killed_at
    wait_for(lambda: replica_nodes() == [node_ids["head"]] * REPLICAS and running_replicas() == REPLICAS,
             180, "replicas rescheduled onto the head", explain=serve_status)
    rescheduled_s = time.monotonic() - killed_at
    time.sleep(10)
    traffic.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    finished = time.monotonic()

    before = traffic.between(0, killed_at)
    during = traffic.between(killed_at, killed_at + rescheduled_s)
    after = traffic.between(killed_at + rescheduled_s, finished)
    failures = [s for s in during + after if s != 200]
    figures = {
        "replicas_on_second_node": on_second, "concurrency": CONCURRENCY,
        "node_marked_dead_s": round(node_dead_s, 1), "replicas_back_s": round(rescheduled_s, 1),
        "requests_before": len(before), "requests_during": len(during), "requests_after": len(after),
        "failed": len(failures), "failed_codes": sorted(set(failures)),
        "throughput_before_rps": round(len(before) / (killed_at - started), 1),
        "throughput_after_rps": round(len(after) / (finished - killed_at - rescheduled_s), 1),
        "slowest_before_s": traffic.slowest(0, killed_at), "slowest_after_kill_s": traffic.slowest(killed_at, finished),
    }
    if prometheus:
        wait_for(lambda: ray_targets_up(prometheus) == {targets["head"]: 1.0, targets["node2"]: 0.0}, 30,
                 "Prometheus to see the second node down", explain=lambda: str(ray_targets_up(prometheus)))
        p95 = query(prometheus, latency_quantile(0.95).replace(RATE, "1m"))
        figures["prometheus_p95_s"] = [round(float(s["value"][1]), 3) for s in p95 if s["metric"].get("model") == MODEL]
        assert figures["prometheus_p95_s"], f"no p95 for {MODEL} in {p95}"
    assert before and all(s == 200 for s in before), f"failures before the node died: {set(before)}"
    assert len(failures) <= CONCURRENCY, f"more failures than requests in flight when the node died: {figures}"
    assert during, "no request was answered while replicas were being rescheduled"
    assert after and all(s == 200 for s in after), f"failures after recovery: {figures}"
    return figures
