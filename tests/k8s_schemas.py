"""Validate Kubernetes objects against the pinned schemas in ../shared/schemas, typos included.

CRD schemas leave objects open (the API server prunes unknown fields silently), so they are tightened
here: every object node that lists `properties` and says nothing about extra ones becomes closed.
"""
import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

CRD_FILES = {
    ("ray.io/v1", "RayService"): "kuberay/ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay/ray.io_rayclusters.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
    ("postgresql.cnpg.io/v1", "Cluster"): "cloudnative-pg/postgresql.cnpg.io_clusters.yaml",
}
CORE_FILES = {
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("v1", "ConfigMap"): "kubernetes/configmap-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("v1", "Secret"): "kubernetes/secret-v1.json",
    ("v1", "ServiceAccount"): "kubernetes/serviceaccount-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "kubernetes/networkpolicy-networking-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "kubernetes/poddisruptionbudget-policy-v1.json",
}


def shared_dir() -> Path:
    """RESFAM_SHARED_DIR, else <repo>/../shared; the calling test skips when neither holds the schemas."""
    candidate = Path(os.environ.get("RESFAM_SHARED_DIR", ROOT.parent / "shared"))
    if not (candidate / "schemas").is_dir():
        pytest.skip(f"no schemas at {candidate}/schemas: set RESFAM_SHARED_DIR to the folder holding schemas/")
    return candidate


def close_objects(node: Any) -> Any:
    """additionalProperties: false wherever a schema object has named properties and no explicit escape."""
    if isinstance(node, dict):
        node = {key: close_objects(value) for key, value in node.items()}
        open_on_purpose = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and not open_on_purpose:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [close_objects(item) for item in node]
    return node


@lru_cache(maxsize=None)
def _object_meta() -> dict:
    """CRDs say only `metadata: {type: object}`; the core schemas hold the real (strict) ObjectMeta."""
    core = json.loads((shared_dir() / "schemas" / CORE_FILES[("v1", "ConfigMap")]).read_text())
    return core["properties"]["metadata"]


@lru_cache(maxsize=None)
def validator_for(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schemas = shared_dir() / "schemas"
    if (api_version, kind) in CORE_FILES:
        return jsonschema.Draft7Validator(json.loads((schemas / CORE_FILES[api_version, kind]).read_text()))
    if (api_version, kind) not in CRD_FILES:
        raise KeyError(f"no schema for {api_version} {kind}")
    crd = yaml.safe_load((schemas / CRD_FILES[api_version, kind]).read_text())
    version = api_version.split("/")[-1]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    schema = close_objects(copy.deepcopy(schema))
    schema["properties"]["metadata"] = _object_meta()
    return jsonschema.Draft7Validator(schema)


def errors(document: dict) -> list[str]:
    """Each problem as 'path: message'; empty when the object is valid."""
    validator = validator_for(document["apiVersion"], document["kind"])
    return [f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in validator.iter_errors(document)]
