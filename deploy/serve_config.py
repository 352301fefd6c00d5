"""serveConfigV2: the project's own config turned into a Ray Serve config with per-deployment overrides.

The image carries serve/config.yaml; the overrides here are what a cluster changes (GPUs per replica,
autoscaling on ongoing requests), so a config edit and a re-render are all a rollout needs.
"""
from pathlib import Path
from typing import Any

from serve.cluster.app import PROJECT_ROOT, classifier_deployments, classifier_options
from serve.config import Autoscaling, ModelDeployment, ServerConfig

from deploy.variants import Variant

APP_NAME = "resfam"
INGRESS_DEPLOYMENT = "Ingress"
IMAGE_APP_DIR = "/home/ray/app"   # where the Dockerfile puts the project
SERVE_PORT = 8000
# On a cluster every model may grow to this many replicas when no autoscaling is configured.
DEFAULT_MAX_REPLICAS = 4


def cluster_spec(spec: ModelDeployment, variant: Variant) -> ModelDeployment:
    """The model's options on a cluster: autoscaled on ongoing requests, GPUs by variant."""
    autoscaling = spec.autoscaling or Autoscaling(
        min_replicas=spec.replicas,
        max_replicas=max(spec.replicas, DEFAULT_MAX_REPLICAS),
        target_ongoing_requests=spec.max_batch_size,  # one full batch in flight per replica
    )
    return spec.model_copy(update={"autoscaling": autoscaling, "num_gpus": variant.gpus_per_replica})


def deployment_overrides(config: ServerConfig, variant: Variant, repository: Path) -> list[dict[str, Any]]:
    classifiers = [{"name": name, **classifier_options(cluster_spec(spec, variant))}
                   for name, _, spec in classifier_deployments(config, repository)]
    # The A/B experiment is the ingress's user_config: editing it here reconfigures a running cluster in place.
    experiment = config.experiment.model_dump() if config.experiment else {}
    return [*classifiers, {"name": INGRESS_DEPLOYMENT, "user_config": experiment}]


def serve_config(config: ServerConfig, config_arg: str, variant: Variant,
                 base_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """A ServeDeploySchema-shaped dict; `config_arg` is the config file's path as the replicas see it."""
    repository = config.repository_path(base_dir).resolve()
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "logging_config": {"encoding": "JSON", "log_level": "WARNING", "enable_access_log": False},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": "serve.cluster.app:app_builder",
            "args": {"config": config_arg},
            "deployments": deployment_overrides(config, variant, repository),
        }],
    }
