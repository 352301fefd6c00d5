"""The feedback store's PostgreSQL for a self-contained cluster: one CloudNativePG `Cluster`.

CloudNativePG creates the database and its owner, and a Secret `<cluster>-app` holding their credentials,
including `uri` (postgresql://<owner>:<password>@<cluster>-rw.<namespace>:5432/<database>): the pods read
RESFAM_FEEDBACK_URL from that key, so no password is ever written here. A managed database replaces this file
with a Secret of the same name and key (deploy/README.md).
"""
from typing import Any

from deploy.security import APP_LABEL

CLUSTER = "resfam-db"
DATABASE = "resfam"
OWNER = "resfam"
URL_SECRET = f"{CLUSTER}-app"   # made by CloudNativePG for the initdb owner
URL_KEY = "uri"


def database_cluster() -> dict[str, Any]:
    """Two instances: a primary and a hot standby the operator promotes if the primary's node goes."""
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER, "labels": dict(APP_LABEL)},
        "spec": {
            "instances": 2,
            "storage": {"size": "4Gi"},
            "bootstrap": {"initdb": {"database": DATABASE, "owner": OWNER}},
            "enableSuperuserAccess": False,
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        },
    }
