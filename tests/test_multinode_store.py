"""The A/B experiment on a real two-node Ray cluster with PostgreSQL as the store loses and doubles nothing.

Two Ingress replicas, one per node, behind the proxy; clients classify sklearn digits and send their true
labels as feedback while the second node is killed; then the whole application is replaced as a NewCluster
upgrade would (the server stops with SIGTERM and flushes, a new Ray cluster and server start on the same
database). /ab/report must then count exactly what the clients saw acknowledged.
"""
from __future__ import annotations

import json
import queue
import random
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import ray
from ray._private.state import actors

from loadtests.server import LiveServer, default_config
from resfam.data import digits
from tests.conftest import free_port
from tests.images import encode
from tests.postgres import PostgresServer, postgres_database, postgres_server  # noqa: F401 (fixtures)
from tests.test_ab_server import SE
from tests.test_multinode import own_token_auth, start_cluster, wait_for
from tests.test_server import recorded

pytestmark = pytest.mark.slow

INGRESS = "ServeReplica:resfam:Ingress"
CLASSIFY_CLIENTS = 4
FEEDBACK_CLIENTS = 2
# Labels come later than answers (as from people): feedback arriving at once would make the answering replica
# write its buffer early (/feedback flushes it) and hide what a node loss does to rows still buffered.
FEEDBACK_LAG_S = 2.0
PNG = {"Content-Type": "image/png"}


class ClusterServer(LiveServer):
    """`python -m serve` joining a Ray cluster it did not start (as on KubeRay's head pod)."""

    def __init__(self, config: dict, workdir: Path, address: str) -> None:
        super().__init__(config, workdir)
        self.address = address

    def command(self) -> list[str]:
        return [*super().command(), "--address", self.address]


def server_config(port: int, store_url: str) -> dict:
    config = default_config(port)
    config["ingress"] = {"replicas": 2, "max_replicas_per_node": 1}  # one per node: a node loss takes one
    config["feedback"] = {"url": store_url, "durable_answers": True}
    for model in config["models"]:  # both fit on the head once the second node is gone
        model.update(num_cpus=0.5, max_batch_size=8)
    return config


@contextmanager
def ray_cluster(name: str):
    """A fresh two-node cluster (tests.test_multinode's), and this test's own auth token."""
    temp_dir = Path(tempfile.mkdtemp(prefix=f"rfms{name}", dir="/tmp"))
    with own_token_auth(temp_dir / "auth_token"):
        yield from start_cluster(temp_dir)


def node_ids() -> dict[str, str]:
    return {("node2" if "node2" in n["Resources"] else "head"): n["NodeID"] for n in ray.nodes() if n["Alive"]}


def ingress_nodes() -> list[str]:
    return sorted(a["Address"]["NodeID"] for a in actors().values()
                  if a["ActorClassName"] == INGRESS and a["State"] == "ALIVE")


@dataclass
class Clients:
    """Classify digits as random users; every 200's id goes to the feedback clients, who send the true label."""

    url: str
    images: list[tuple[bytes, int]]
    answered: dict[str, tuple[str, bool]] = field(default_factory=dict)  # request_id -> (arm, correct)
    classify_failed: Counter = field(default_factory=Counter)  # status (0: no answer) -> count
    acknowledged: set[str] = field(default_factory=set)  # feedback 200 with counted true
    repeated: list[str] = field(default_factory=list)  # 200 counted false: an earlier, unanswered try was stored
    feedback_failed: Counter = field(default_factory=Counter)
    unknown: list[str] = field(default_factory=list)  # 404: the prediction is not in the store
    pending: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._classify, args=(i,), daemon=True) for i in range(CLASSIFY_CLIENTS)]
        threads += [threading.Thread(target=self._feedback, daemon=True) for _ in range(FEEDBACK_CLIENTS)]
        for thread in threads:
            thread.start()
        return threads

    def _classify(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                data, target = rng.choice(self.images)
                try:
                    r = client.post("/classify", content=data, headers={**PNG, "X-User-Id": f"u{rng.randrange(10**6)}"})
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    if status != 200:
                        self.classify_failed[status] += 1
                        continue
                    body = r.json()
                    self.answered[body["request_id"]] = (body["arm"], body["predictions"][0]["index"] == target)
                self.pending.put((time.monotonic() + FEEDBACK_LAG_S, body["request_id"], target))

    def _feedback(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not (self.stop.is_set() and self.pending.empty()):
                try:
                    due, request_id, target = self.pending.get(timeout=0.2)
                except queue.Empty:
                    continue
                time.sleep(max(0.0, due - time.monotonic()))
                for attempt in range(20):  # retried through the node loss: the feedback must land once
                    try:
                        r = client.post("/feedback", json={"request_id": request_id, "label": target})
                        status = r.status_code
                    except httpx.HTTPError:
                        status = 0
                    with self.lock:
                        if status == 200:
                            (self.acknowledged.add if r.json()["counted"] else self.repeated.append)(request_id)
                            break
                        self.feedback_failed[status] += 1
                        if status == 404:
                            self.unknown.append(request_id)
                            break
                    time.sleep(0.5)

    def expected(self) -> dict[str, dict[str, int]]:
        """Per arm: 200 answers, acknowledged feedback and how much of it was correct."""
        arms: dict[str, dict[str, int]] = {}
        for request_id, (arm, correct) in self.answered.items():
            counts = arms.setdefault(arm, {"requests": 0, "feedback": 0, "correct": 0})
            counts["requests"] += 1
            if request_id in self.acknowledged or request_id in self.repeated:
                counts["feedback"] += 1
                counts["correct"] += correct
        return arms


def digit_pngs() -> list[tuple[bytes, int]]:
    test = digits("test", seed=recorded(SE)["metrics"]["split_seed"])
    return [(encode(test[i][0], "PNG"), int(test.targets[i])) for i in range(len(test))]


def report_totals(url: str) -> dict[str, dict[str, int]]:
    report = httpx.get(f"{url}/ab/report", timeout=60)
    assert report.status_code == 200, report.text
    return {a["arm"]: {k: a[k] for k in ("requests", "feedback", "correct")} for a in report.json()["arms"]}


def test_node_loss_and_new_cluster_upgrade_lose_no_acknowledged_prediction_or_feedback(
        postgres_database, tmp_path):  # noqa: F811 (fixture)
    clients = Clients("", digit_pngs())
    figures: dict = {}
    with ray_cluster("a") as first:
        nodes = node_ids()
        port = free_port()
        server = ClusterServer(server_config(port, postgres_database), tmp_path / "first", first["address"])
        clients.url = server.url
        server.start()
        try:
            placed = wait_for(lambda: found if len(found := ingress_nodes()) == 2 else None, 120, "two Ingress replicas")
            assert sorted(placed) == sorted(nodes.values()), f"Ingress replicas not one per node: {placed} {nodes}"
            threads = clients.run()
            time.sleep(15)
            figures["answered_before_kill"] = len(clients.answered)
            killed_at = time.monotonic()
            first["second"].kill()
            wait_for(lambda: not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == nodes["node2"]),
                     60, "Ray to mark the second node dead")
            figures["node_dead_s"] = round(time.monotonic() - killed_at, 1)
            wait_for(lambda: ingress_nodes() == [nodes["head"]], 30, "only the head's Ingress replica alive",
                     explain=lambda: str(ingress_nodes()))
            time.sleep(10)  # the head's replica serves alone (the other cannot go to the head: one per node)
            clients.stop.set()
            for thread in threads:
                thread.join(timeout=120)
            assert not any(t.is_alive() for t in threads), "clients did not finish"
            figures["answered_at_stop"] = len(clients.answered)
            server.stop()  # SIGTERM: drains and flushes, as the old cluster's head would before it goes
        finally:
            clients.stop.set()
            server.stop()  # after a failure
        figures["first_server_drain"] = [line for line in server.log_path.read_text().splitlines()
                                         if line.startswith("drained")]
    with ray_cluster("b") as second:
        server = ClusterServer(server_config(free_port(), postgres_database), tmp_path / "second", second["address"])
        with server:
            after_upgrade = report_totals(server.url)
    expected = clients.expected()
    figures.update(
        answered=len(clients.answered), classify_failed=dict(clients.classify_failed),
        feedback_acknowledged=len(clients.acknowledged), feedback_repeated=len(clients.repeated),
        feedback_failed=dict(clients.feedback_failed), feedback_unknown=len(clients.unknown),
        expected=expected, reported=after_upgrade,
        lost_requests={a: expected[a]["requests"] - after_upgrade.get(a, {}).get("requests", 0) for a in expected})
    print("\nmulti-node store figures: " + json.dumps(figures))
    assert clients.answered and set(expected) == {a for a in after_upgrade if after_upgrade[a]["requests"]}, figures
    assert not clients.unknown, f"feedback for answered requests found no prediction (lost): {figures}"
    # A request whose node dies after its prediction was committed but before the answer reached the client is
    # in the store though the client saw an error (a CI run: 422 counted, 421 answered, 4 failed in flight):
    # the report may hold up to that many predictions more than the 200s, never fewer, and the labels exactly.
    for arm, seen in expected.items():
        got = after_upgrade[arm]
        assert (got["feedback"], got["correct"]) == (seen["feedback"], seen["correct"]), figures
        assert got["requests"] >= seen["requests"], f"acknowledged predictions lost: {figures}"
    extra = sum(after_upgrade[arm]["requests"] - seen["requests"] for arm, seen in expected.items())
    assert extra <= sum(clients.classify_failed.values()), f"more predictions than requests in flight: {figures}"
