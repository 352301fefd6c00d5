"""What the pods read from Kubernetes Secrets, and the example Secret for the API keys.

Both go in as environment variables, so a pod sees the values its containers started with: a changed Secret
reaches the app when new pods start (deploy/README.md, "Rotating API keys").
"""
import json
from typing import Any

from deploy.postgres import URL_KEY, URL_SECRET
from deploy.security import APP_LABEL, NAME

FEEDBACK_URL_ENV = "RESFAM_FEEDBACK_URL"
API_KEYS_ENV = "RESFAM_API_KEYS"
API_KEYS_SECRET = f"{NAME}-api-keys"
API_KEYS_KEY = "keys"   # the server's key list: JSON [{"name", "key", "scopes"}] (serve/api/auth.py)
PLACEHOLDER = "REPLACE-ME"


def _from_secret(env: str, secret: str, key: str) -> dict[str, Any]:
    # Not optional: a pod whose Secret is missing waits (CreateContainerConfigError) instead of serving
    # without authentication or without its feedback store.
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secret_env() -> list[dict[str, Any]]:
    return [_from_secret(FEEDBACK_URL_ENV, URL_SECRET, URL_KEY),
            _from_secret(API_KEYS_ENV, API_KEYS_SECRET, API_KEYS_KEY)]


def api_keys_example() -> dict[str, Any]:
    """The shape of the API-keys Secret with placeholder keys; the real one is made with kubectl."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": API_KEYS_SECRET,
            "labels": dict(APP_LABEL),
            "annotations": {"resfam.io/example": "placeholder values: create the real Secret with kubectl"},
        },
        "type": "Opaque",
        "stringData": {API_KEYS_KEY: json.dumps([
            {"name": "web", "key": f"{PLACEHOLDER}-with-a-random-key", "scopes": ["classify", "read"]},
            {"name": "labelling", "key": f"{PLACEHOLDER}-with-another-random-key", "scopes": ["feedback"]},
        ])},
    }
