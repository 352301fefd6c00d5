"""The two cluster shapes we render for: CPU-only nodes, or GPU worker nodes with the NVIDIA device plugin."""
import tomllib
from dataclasses import dataclass, field

import ray

from serve.cluster.app import PROJECT_ROOT

RAY_VERSION = ray.__version__
IMAGE_REPOSITORY = "resfam-serve"
# The image carries code, config and models, so a release (and a model rollout) bumps the project version.
IMAGE_TAG = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class Variant:
    """What differs between a CPU-only and a GPU cluster; everything else is shared."""

    name: str
    gpus_per_replica: float          # Ray logical GPUs each classifier replica asks for
    worker_resources: dict[str, str]  # container requests == limits (guaranteed QoS)
    worker_max_replicas: int
    tolerations: list[dict] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)

    def image(self, repository: str = IMAGE_REPOSITORY) -> str:
        return f"{repository}:{IMAGE_TAG}-{self.name}"

    @property
    def gpus_per_worker(self) -> int:
        return int(self.worker_resources.get("nvidia.com/gpu", "0"))


GPU_TAINT_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

VARIANTS: dict[str, Variant] = {
    "cpu": Variant(
        name="cpu",
        gpus_per_replica=0,
        worker_resources={"cpu": "4", "memory": "8Gi"},
        worker_max_replicas=8,
    ),
    # Two small ONNX models share one GPU: half a logical GPU per replica packs them onto one node.
    "gpu": Variant(
        name="gpu",
        gpus_per_replica=0.5,
        worker_resources={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        worker_max_replicas=4,
        tolerations=[GPU_TAINT_TOLERATION],
        # Set by NVIDIA GPU feature discovery (part of the GPU operator) on every node with a GPU.
        node_selector={"nvidia.com/gpu.present": "true"},
    ),
}
