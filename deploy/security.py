"""The locked-down pod: read-only root, no capabilities, emptyDirs only where Ray writes; who may reach it.

Ray writes only below its temp dir (/tmp/ray: session, sockets, logs) and, in HAProxy mode, HAProxy's files in
/tmp/haproxy-serve; Python's tempfile uses /tmp. So /tmp is an emptyDir. /tmp/ray is one of its own because
KubeRay shares the volume at that path with the autoscaler sidecar (its logs feed the head's event log).
"""
from dataclasses import dataclass, field
from typing import Any

from deploy.serve_config import SERVE_PORT

NAME = "resfam-serve"
# Not app.kubernetes.io/name: KubeRay sets that one to "kuberay" on its pods.
APP_LABEL = {"app.kubernetes.io/part-of": NAME}
METRICS_PORT = 8080      # Ray's --metrics-export-port on every node
DASHBOARD_PORT = 8265    # KubeRay's operator deploys serveConfigV2 and reads app status through it
RAY_UID = 1000           # the `ray` user of the official images
WORKER_SERVICE_ACCOUNT = f"{NAME}-worker"
# name -> path of every writable directory; everything else in the container is read-only.
WRITABLE_PATHS = {"tmp": "/tmp", "ray-logs": "/tmp/ray"}
# The pods of this app that KubeRay made (ray.io/cluster is set on them); the cluster's name changes with each
# upgrade (RayService NewCluster), so the selector names the app, not one cluster.
RAY_PODS = {"matchLabels": dict(APP_LABEL), "matchExpressions": [{"key": "ray.io/cluster", "operator": "Exists"}]}


@dataclass(frozen=True)
class Access:
    """Who may reach the pods besides their own Ray cluster; `python -m deploy render` flags set each field."""

    client_namespaces: tuple[str, ...] = ()  # port 8000 from these namespaces too (always from this one)
    prometheus_namespace: str = "monitoring"
    prometheus_pods: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    kuberay_namespace: str = "kuberay-system"
    kuberay_pods: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "kuberay-operator"})


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RAY_UID, "fsGroup": RAY_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def writable_mounts() -> list[dict[str, str]]:
    return [{"name": name, "mountPath": path} for name, path in WRITABLE_PATHS.items()]


def writable_volumes() -> list[dict[str, Any]]:
    return [{"name": name, "emptyDir": {}} for name in WRITABLE_PATHS]


def worker_service_account() -> dict[str, Any]:
    """Workers never call the Kubernetes API, so they get no token. The head keeps the account KubeRay gives it:
    its autoscaler sidecar scales the worker group through the API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": WORKER_SERVICE_ACCOUNT, "labels": dict(APP_LABEL)},
        "automountServiceAccountToken": False,
    }


def _from(namespace: str, pods: dict[str, str]) -> dict[str, Any]:
    """Pods with these labels in that namespace (both must match: one peer, not two)."""
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": dict(pods)}}


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": number} for number in numbers]


def network_policy(access: Access = Access()) -> dict[str, Any]:
    """Ingress to the Ray pods: Ray's own traffic (GCS, raylets, object transfer, replica calls: many ports, some
    random) only between the app's Ray pods; port 8000 from the namespace; metrics from Prometheus; the
    dashboard and the proxy's health check from the KubeRay operator. Egress is left open (DNS, database)."""
    clients = [{"podSelector": {}}] + [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                                       for ns in access.client_namespaces]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NAME, "labels": dict(APP_LABEL)},
        "spec": {
            "podSelector": RAY_PODS,
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": RAY_PODS}]},
                {"from": clients, "ports": _ports(SERVE_PORT)},
                # The app's /metrics shares the serving port (the PodMonitor scrapes it on the head).
                {"from": [_from(access.prometheus_namespace, access.prometheus_pods)],
                 "ports": _ports(METRICS_PORT, SERVE_PORT)},
                {"from": [_from(access.kuberay_namespace, access.kuberay_pods)],
                 "ports": _ports(DASHBOARD_PORT, SERVE_PORT)},
            ],
        },
    }


def worker_disruption_budget() -> dict[str, Any]:
    """A node drain may not take the last worker (every classifier replica lives on workers). RayCluster has no
    scale subresource, so only an integer minAvailable works for its pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{NAME}-workers", "labels": dict(APP_LABEL)},
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {**APP_LABEL, "ray.io/node-type": "worker"}},
        },
    }
