"""Build the Ray Serve application from the config: typed builder arguments, composed handles."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ray.serve import Application

from serve.config import ModelDeployment, ServerConfig, load_config
from serve.deployments import Classifier, MetricsHub
from serve.ingress import Ingress
from serve.repository import load_artifact

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class AppArgs(BaseModel):
    """Arguments of `serve run serve.app:app_builder config=...` and of a RayService import_path."""

    config: str = str(PROJECT_ROOT / "serve" / "config.yaml")


def classifier_options(spec: ModelDeployment) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
        # Room for two full batches per replica; beyond that requests queue (bounded) at the caller.
        "max_ongoing_requests": max(2 * spec.max_batch_size, 8),
        "max_queued_requests": spec.max_queued_requests,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 20,
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": spec.autoscaling.min_replicas,
            "max_replicas": spec.autoscaling.max_replicas,
            "target_ongoing_requests": spec.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = spec.replicas
    return options


def build_app(config: ServerConfig, base_dir: Path = PROJECT_ROOT) -> Application:
    repository = config.repository_path(base_dir).resolve()
    hub = MetricsHub.options(ray_actor_options={"num_cpus": 0}).bind()
    classifiers, preprocess_in = {}, {}
    for spec in config.models:
        artifact = load_artifact(repository, spec.name, spec.version)
        pinned = spec.model_copy(update={"version": artifact.version})
        deployment = Classifier.options(name=f"classifier-{artifact.name}-{artifact.version}", **classifier_options(spec))
        classifiers[artifact.key] = deployment.bind(pinned, str(repository), hub)
        preprocess_in[artifact.key] = spec.preprocess_in
    return Ingress.bind(config, str(repository), classifiers, hub, preprocess_in)


def app_builder(args: AppArgs) -> Application:
    config_path = Path(args.config)
    return build_app(load_config(config_path), PROJECT_ROOT)
