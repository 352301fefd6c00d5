"""Build the Ray Serve application from the config: typed builder arguments, composed handles."""
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ray.serve import Application, Deployment

from serve.api.auth import check_auth, keys_generation
from serve.config import PROJECT_ROOT, AuthConfig, Autoscaling, IngressConfig, ModelDeployment, ServerConfig, load_config
from serve.runtime.decoding import Decoding
from serve.runtime.deployments import Classifier, MetricsHub
from serve.api.ingress import Ingress
from serve.runtime.repository import ModelArtifact, load_artifact
from serve.runtime.runner import max_ongoing_requests

SERVE_PACKAGE = PROJECT_ROOT / "serve"
# Ray 2.60's router runs at most two routing tasks per replica; one that found every replica full retries after a
# backoff that doubles up to max_backoff_s (default 0.5 s) and routes one request per retry, so a queue behind a
# full replica drained at ~4 requests/s however many slots came free (44 stalled uploads released at once held
# normal requests for 11 s: tests/test_slow_clients.py). 0.05 s costs at most 20 queue-length probes a second per
# routing task while a replica stays full.
ROUTER = {"max_backoff_s": 0.05}


class AppArgs(BaseModel):
    """Arguments of `serve run serve.cluster.app:app_builder config=...` and of a RayService import_path.

    No `from __future__ import annotations` in this module: Ray Serve turns the args dict into this
    model only when app_builder's annotation is the class itself, not a string.
    """

    config: str = str(PROJECT_ROOT / "serve" / "config.yaml")


def replica_options(replicas: int, autoscaling: Autoscaling | None) -> dict[str, Any]:
    """Ray Serve takes a fixed num_replicas or an autoscaling_config, not both; every routed deployment gets ROUTER."""
    if autoscaling is None:
        return {"num_replicas": replicas, "request_router_config": dict(ROUTER)}
    return {"request_router_config": dict(ROUTER), "autoscaling_config": {
        "min_replicas": autoscaling.min_replicas,
        "max_replicas": autoscaling.max_replicas,
        "target_ongoing_requests": autoscaling.target_ongoing_requests,
    }}


def ingress_options(spec: IngressConfig) -> dict[str, Any]:
    """Overrides the decorator's num_replicas=1: every Ingress replica serves HTTP on its own."""
    per_node = {} if spec.max_replicas_per_node is None else {"max_replicas_per_node": spec.max_replicas_per_node}
    return {**replica_options(spec.replicas, spec.autoscaling), **per_node}


def classifier_options(spec: ModelDeployment) -> dict[str, Any]:
    return {
        "ray_actor_options": {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
        "max_ongoing_requests": max_ongoing_requests(spec),
        "max_queued_requests": spec.max_queued_requests,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 20,
        **replica_options(spec.replicas, spec.autoscaling),
    }


def deployment_name(artifact: ModelArtifact, versions_served: int) -> str:
    """One version of a model keeps the version out of the name, so that a new version is a rolling
    update of the same deployment: callers' handles stay valid and no request meets a deleted one."""
    if versions_served == 1:
        return f"classifier-{artifact.name}"
    return f"classifier-{artifact.name}-{artifact.version}"


def versioned(deployment: Deployment, *inputs: str) -> Deployment:
    """Version a deployment by the serving code and its init arguments.

    Without a version `serve.run` gives every deployment a random one, so each SIGHUP replaced every
    replica, models included. With it, a redeploy that changes neither code nor arguments leaves the
    replicas running and applies a new user_config (the A/B experiment) in place. Ray 2.60 removed
    the public `version` option but still honours the attribute it set; without it, behaviour falls
    back to a rolling replacement, which drops no request either.
    """
    digest = hashlib.sha256()
    for source in sorted(SERVE_PACKAGE.rglob("*.py")):
        digest.update(source.read_bytes())
    for text in inputs:
        digest.update(text.encode())
    deployment._version = digest.hexdigest()[:16]
    return deployment


def classifier_deployments(
    config: ServerConfig, repository: Path
) -> list[tuple[str, ModelArtifact, ModelDeployment]]:
    """(deployment name, artifact, spec) per served model version; a cluster's serve config
    (deploy/) overrides deployments by these names."""
    served = Counter(spec.name for spec in config.models)
    found = []
    for spec in config.models:
        artifact = load_artifact(repository, spec.name, spec.version)
        found.append((deployment_name(artifact, served[spec.name]), artifact, spec))
    return found


def resolved_auth(config: ServerConfig, base_dir: Path) -> AuthConfig | str:
    """The keys file as an absolute path: replicas do not run in the project root."""
    keys = config.keys_path(base_dir)
    if config.auth == "none" or keys is None:
        return config.auth
    return config.auth.model_copy(update={"keys_file": str(keys.resolve())})


def ingress_user_config(config: ServerConfig, keys: str | None, drain_s: float | None = None) -> dict[str, Any]:
    """What the ingress applies in place (Ingress.reconfigure): the experiment, the generation of its API
    keys (a digest that changes with them; None where the keys come only from the pod's environment), and on
    the way out `drain_s`, which makes every replica drain."""
    user_config = {"experiment": config.experiment.model_dump() if config.experiment else None, "keys": keys}
    return {**user_config, "drain_s": drain_s} if drain_s else user_config


def build_app(config: ServerConfig, base_dir: Path = PROJECT_ROOT, drain_s: float | None = None) -> Application:
    """`drain_s`: the same application, told to drain (every Ingress replica, in place; see Ingress.reconfigure).
    A model with `runs_in: ingress` gets no deployment: each Ingress replica runs it (its spec goes to the ingress)."""
    repository = config.repository_path(base_dir).resolve()
    hub = versioned(MetricsHub.options(ray_actor_options={"num_cpus": 0})).bind()
    classifiers, local, local_inputs, decoding_by_model = {}, {}, [], {}
    for name, artifact, spec in classifier_deployments(config, repository):
        pinned = spec.model_copy(update={"version": artifact.version})
        decoding = Decoding(spec.preprocess_in, spec.decode, config.limits.decode_budget_bytes,
                            config.limits.decode_wait_s)
        decoding_by_model[artifact.key] = decoding  # the ingress decodes a model whose decoding.where says so
        inputs = (pinned.model_dump_json(), str(repository), str(artifact.meta.get("sha256")), repr(decoding))
        if spec.runs_in == "ingress":
            local[artifact.key] = pinned
            local_inputs.extend(inputs)
            continue
        deployment = Classifier.options(name=name, **classifier_options(spec))
        classifiers[artifact.key] = versioned(deployment, *inputs).bind(pinned, str(repository), hub, decoding)
    # The experiment and the keys' generation travel as user_config: they change without restarting the ingress.
    fixed = config.model_copy(update={"experiment": None, "auth": resolved_auth(config, base_dir)})
    feedback_url = config.feedback_url(base_dir.resolve())  # RESFAM_FEEDBACK_URL is applied in the replica
    user_config = ingress_user_config(config, keys_generation(config.keys_path(base_dir)), drain_s)
    # The GPUs of the models it runs; its CPUs stay as the decorator says.
    actor = {**Ingress.ray_actor_options, "num_gpus": sum(spec.num_gpus for spec in local.values())}
    # The replica count stays out of the version: a new count rescales in place instead of replacing replicas.
    ingress = versioned(Ingress.options(user_config=user_config, ray_actor_options=actor,
                                        **ingress_options(config.ingress)),
                        fixed.model_dump_json(exclude={"ingress"}), str(repository), ",".join(classifiers),
                        feedback_url, repr(sorted(decoding_by_model.items())), *local_inputs)
    return ingress.bind(fixed, str(repository), classifiers, hub, feedback_url, decoding_by_model, local)


def app_builder(args: AppArgs) -> Application:
    """The cluster's entry point (RayService, `serve run`): refuses to serve without keys unless `auth: none`;
    every model in a deployment of its own (ServerConfig.on_cluster)."""
    config = load_config(Path(args.config))
    check_auth(config, "0.0.0.0", PROJECT_ROOT)
    return build_app(config.on_cluster(), PROJECT_ROOT)
