"""`ingress.max_replicas_per_node: 1` on a real two-node Ray cluster: when a node is lost, its replica is not
placed again until a node joins. The cause is Ray Serve's constraint itself, not this project: Ray Serve asks
for 1/max_replicas_per_node of an implicit resource that every node has exactly one of
(ray/serve/_private/deployment_scheduler.py, IMPLICIT_RESOURCE_PREFIX), so on one node a second replica is
unschedulable. A deployment without the constraint, beside it, is re-placed on the remaining node."""
from __future__ import annotations

import time

import pytest
import ray
from ray import serve as ray_serve
from ray._private.state import actors

from tests.test_multinode import RayNode, wait_for
from tests.test_multinode_store import ray_cluster

pytestmark = pytest.mark.slow

APP = "pernode"
STAY_DOWN_S = 45  # the replica stays unplaced at least this long (the constraint holds indefinitely)


@ray_serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
class Echo:
    def __call__(self) -> str:
        return "ok"


def running(name: str) -> int:
    deployment = ray_serve.status().applications[APP].deployments[name]
    return deployment.replica_states.get("RUNNING", 0)


def nodes_of(name: str) -> list[str]:
    return sorted(a["Address"]["NodeID"] for a in actors().values()
                  if a["ActorClassName"] == f"ServeReplica:{APP}:{name}" and a["State"] == "ALIVE")


def test_one_replica_per_node_waits_for_a_node():
    with ray_cluster("pn") as cluster:
        capped = Echo.options(name="capped", max_replicas_per_node=1)
        free = Echo.options(name="free")

        @ray_serve.deployment(ray_actor_options={"num_cpus": 0})
        class Both:
            def __init__(self, a, b) -> None:
                self.a, self.b = a, b

        ray_serve.run(Both.bind(capped.bind(), free.bind()), name=APP, route_prefix=None)
        wait_for(lambda: running("capped") == 2 and running("free") == 2, 120, "both deployments")
        assert len(set(nodes_of("capped"))) == 2, "one capped replica per node"

        cluster["second"].kill()
        wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 1, 120, "the second node to be gone")
        wait_for(lambda: running("capped") == 1, 60, "Serve to notice the capped replica is gone",
                 explain=lambda: str(ray_serve.status()))
        wait_for(lambda: running("free") == 2 and len(nodes_of("free")) == 2, 60,
                 "the free deployment to be whole on the head", explain=lambda: str(ray_serve.status()))
        started = time.monotonic()
        while time.monotonic() - started < STAY_DOWN_S:
            assert running("capped") <= 1, ray_serve.status()
            time.sleep(1)
        assert running("capped") == 1 and len(nodes_of("capped")) == 1

        workdir = cluster["workdir"]  # short: Ray's socket paths must fit in 107 bytes
        back = RayNode(workdir / "w2", [f"--address={cluster['address']}", "--num-cpus=1"], workdir / "back.log")
        try:
            wait_for(lambda: running("capped") == 2, 120, "the capped replica once a node is back",
                     explain=lambda: str(ray_serve.status()))
            assert len(set(nodes_of("capped"))) == 2
        finally:
            back.kill()
