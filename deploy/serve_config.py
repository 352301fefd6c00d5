"""serveConfigV2: the project's own config turned into a Ray Serve config with per-deployment overrides.

The image carries serve/config.yaml; the overrides here are what a cluster changes (GPUs per replica,
autoscaling on ongoing requests), so a config edit and a re-render are all a rollout needs.
"""
from pathlib import Path
from typing import Any

from serve.cluster.app import (PROJECT_ROOT, classifier_deployments, classifier_options, ingress_options,
                               ingress_user_config)
from serve.config import Autoscaling, IngressConfig, ModelDeployment, ServerConfig

from deploy.variants import Variant

APP_NAME = "resfam"
INGRESS_DEPLOYMENT = "Ingress"
IMAGE_APP_DIR = "/home/ray/app"   # where the Dockerfile puts the project
SERVE_PORT = 8000
# On a cluster every model may grow to this many replicas when no autoscaling is configured.
DEFAULT_MAX_REPLICAS = 4
# Ingress replicas a cluster runs at least: losing one pod (drain, crash, upgrade) leaves another serving HTTP.
CLUSTER_MIN_INGRESS = 2


def cluster_spec(spec: ModelDeployment, variant: Variant) -> ModelDeployment:
    """The model's options on a cluster: autoscaled on ongoing requests, GPUs by variant."""
    autoscaling = spec.autoscaling or Autoscaling(
        min_replicas=spec.replicas,
        max_replicas=max(spec.replicas, DEFAULT_MAX_REPLICAS),
        target_ongoing_requests=spec.max_batch_size,  # one full batch in flight per replica
    )
    return spec.model_copy(update={"autoscaling": autoscaling, "num_gpus": variant.gpus_per_replica})


def cluster_ingress(spec: IngressConfig) -> IngressConfig:
    """The config's Ingress scaling, raised to CLUSTER_MIN_INGRESS replicas; Ray Serve spreads them over nodes."""
    if spec.autoscaling is None:
        return IngressConfig(replicas=max(spec.replicas, CLUSTER_MIN_INGRESS),
                             max_replicas_per_node=spec.max_replicas_per_node)
    low = max(spec.autoscaling.min_replicas, CLUSTER_MIN_INGRESS)
    raised = spec.autoscaling.model_copy(update={"min_replicas": low,
                                                 "max_replicas": max(low, spec.autoscaling.max_replicas)})
    return IngressConfig(autoscaling=raised, max_replicas_per_node=spec.max_replicas_per_node)


def deployment_overrides(config: ServerConfig, variant: Variant, repository: Path) -> list[dict[str, Any]]:
    classifiers = [{"name": name, **classifier_options(cluster_spec(spec, variant))}
                   for name, _, spec in classifier_deployments(config, repository)]
    # The A/B experiment is in the ingress's user_config: editing it here reconfigures a running cluster in place.
    # API keys come from the pods' environment (a Secret), so no generation: new keys take a rolling restart.
    ingress = {"name": INGRESS_DEPLOYMENT, "user_config": ingress_user_config(config, None),
               **ingress_options(cluster_ingress(config.ingress))}
    return [*classifiers, ingress]


def serve_config(config: ServerConfig, config_arg: str, variant: Variant,
                 base_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """A ServeDeploySchema-shaped dict; `config_arg` is the config file's path as the replicas see it. Every model
    gets a deployment of its own, as app_builder builds it on the cluster (ServerConfig.on_cluster)."""
    config = config.on_cluster()
    repository = config.repository_path(base_dir).resolve()
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT, "keep_alive_timeout_s": config.http.keep_alive_timeout_s},
        "logging_config": {"encoding": "JSON", "log_level": "WARNING", "enable_access_log": False},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": "serve.cluster.app:app_builder",
            "args": {"config": config_arg},
            "deployments": deployment_overrides(config, variant, repository),
        }],
    }
