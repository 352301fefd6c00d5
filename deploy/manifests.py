"""Kubernetes objects for one variant: the RayService, a stable Service on port 8000, and PodMonitors."""
from typing import Any

import yaml

from deploy import credentials, security
from deploy.security import APP_LABEL, DASHBOARD_PORT, METRICS_PORT, NAME
from deploy.serve_config import SERVE_PORT
from deploy.variants import IMAGE_REPOSITORY, RAY_VERSION, Variant

HEAD_RESOURCES = {"cpu": "2", "memory": "8Gi"}


class _LiteralStr(str):
    """Written as a YAML block scalar, so serveConfigV2 reads like the YAML it is."""


def _literal(dumper: yaml.SafeDumper, value: _LiteralStr) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class ManifestDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        """A dict used twice (a selector) is written out twice, not as a YAML anchor and alias."""
        return True


ManifestDumper.add_representer(_LiteralStr, _literal)


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=ManifestDumper, sort_keys=False, width=120)


def _ray_container(name: str, image: str, resources: dict[str, str], ports: list[dict],
                   environment: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports,
        # Ray Serve reads its ingress flags (serve/cluster/ray_env.py) when Ray starts in the pod; replicas
        # inherit Ray's environment, secrets included.
        "env": [{"name": key, "value": value} for key, value in sorted(environment.items())]
               + credentials.secret_env(),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": security.container_security_context(),
        "volumeMounts": security.writable_mounts(),
        # Drain Serve replicas before the pod goes away (KubeRay scale-down, rolling node upgrades).
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }


def _pod_template(container: dict[str, Any], variant: Variant, gpu_node: bool,
                  service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": security.pod_security_context(),
        "volumes": security.writable_volumes(),
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if gpu_node:
        spec["tolerations"] = list(variant.tolerations)
        spec["nodeSelector"] = dict(variant.node_selector)
    return {"metadata": {"labels": dict(APP_LABEL)}, "spec": spec}


def head_group(variant: Variant, image: str, environment: dict[str, str]) -> dict[str, Any]:
    """The head runs the Serve controller, a proxy and the ingress; no GPU, no classifier replicas."""
    ports = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": DASHBOARD_PORT},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    container = _ray_container("ray-head", image, HEAD_RESOURCES, ports, environment)
    return {
        # num-cpus 0: replicas that need a CPU go to workers; the 0-CPU ingress and metrics hub may stay.
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "metrics-export-port": str(METRICS_PORT)},
        "template": _pod_template(container, variant, gpu_node=False),
    }


def worker_group(variant: Variant, image: str, environment: dict[str, str]) -> dict[str, Any]:
    ports = [{"name": "serve", "containerPort": SERVE_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}]
    container = _ray_container("ray-worker", image, variant.worker_resources, ports, environment)
    return {
        "groupName": f"{variant.name}-workers",
        "replicas": 1,
        "minReplicas": 1,
        "maxReplicas": variant.worker_max_replicas,
        "rayStartParams": {"metrics-export-port": str(METRICS_PORT)},
        "template": _pod_template(container, variant, gpu_node=variant.gpus_per_worker > 0,
                                  service_account=security.WORKER_SERVICE_ACCOUNT),
    }


def ray_service(variant: Variant, serve_config_yaml: str, environment: dict[str, str],
                image_repository: str = IMAGE_REPOSITORY) -> dict[str, Any]:
    image = variant.image(image_repository)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "labels": dict(APP_LABEL)},
        "spec": {
            # A new image (new models) starts a second cluster; traffic moves once its apps are ready.
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": _LiteralStr(serve_config_yaml),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # Serve autoscaling asks for replicas; the in-tree autoscaler adds worker pods to host them.
                "enableInTreeAutoscaling": True,
                # KubeRay adds the autoscaler as a sidecar of the head: locked down the same way.
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300,
                                      "securityContext": security.container_security_context(),
                                      "volumeMounts": security.writable_mounts()},
                "headGroupSpec": head_group(variant, image, environment),
                "workerGroupSpecs": [worker_group(variant, image, environment)],
            },
        },
    }


def serve_service() -> dict[str, Any]:
    """A stable name for port 8000 on every pod whose Serve proxy KubeRay has marked ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "labels": dict(APP_LABEL)},
        "spec": {
            "type": "ClusterIP",
            "selector": {**APP_LABEL, "ray.io/serve": "true"},
            "ports": [{"name": "serve", "port": SERVE_PORT, "targetPort": "serve", "protocol": "TCP"}],
        },
    }


def pod_monitors() -> list[dict[str, Any]]:
    """Ray's metrics from every node; the application's (already cluster-wide) from the head only."""
    ray_metrics = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"{NAME}-ray", "labels": dict(APP_LABEL)},
        "spec": {
            "selector": {"matchLabels": dict(APP_LABEL)},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }
    # /metrics on port 8000 aggregates all replicas, so scraping every proxy would count each series N times.
    app_metrics = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"{NAME}-app", "labels": dict(APP_LABEL)},
        "spec": {
            "selector": {"matchLabels": {**APP_LABEL, "ray.io/node-type": "head"}},
            "podMetricsEndpoints": [{"port": "serve", "path": "/metrics", "interval": "15s"}],
        },
    }
    return [ray_metrics, app_metrics]
