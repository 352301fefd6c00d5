"""The locked-down pods (issue 15), their Secrets and database (issue 13): rendered, validated, and consistent."""
import copy
import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from deploy import credentials, postgres, security
from deploy.render import DEPLOY_DIR, render
from deploy.security import Access
from deploy.serve_config import CLUSTER_MIN_INGRESS, cluster_ingress
from deploy.variants import VARIANTS
from serve.api.auth import parse_keys
from serve.config import parse_config
from tests import k8s_schemas

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "serving"   # where the app runs in these checks


def documents(rel: str) -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY_DIR / rel).read_text()))


def cluster_config(variant: str) -> dict:
    return documents(f"k8s/{variant}/rayservice.yaml")[0]["spec"]["rayClusterConfig"]


def pod_specs(variant: str) -> list[dict]:
    cluster = cluster_config(variant)
    return [group["template"]["spec"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def containers(variant: str) -> list[tuple[dict, dict]]:
    """(container, its pod spec) for every container KubeRay runs, the autoscaler sidecar of the head included."""
    head = cluster_config(variant)["headGroupSpec"]["template"]["spec"]
    found = [(c, spec) for spec in pod_specs(variant) for c in spec["containers"]]
    return found + [(cluster_config(variant)["autoscalerOptions"], head)]


def security_kinds(variant: str) -> dict[str, dict]:
    return {d["kind"]: d for d in documents(f"k8s/{variant}/security.yaml")}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down(variant):
    for container, pod in containers(variant):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]} and "add" not in context["capabilities"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@lru_cache(maxsize=1)
def ray_write_locations() -> tuple[str, ...]:
    """Where Ray and Ray Serve write in a pod: asked of Ray itself, in an environment as bare as the pod's."""
    code = ("import json, tempfile\n"
            "from ray._common.utils import get_default_ray_temp_dir\n"
            "from ray.serve._private import constants as c\n"
            "print(json.dumps([tempfile.gettempdir(), get_default_ray_temp_dir(),"
            " c.RAY_SERVE_HAPROXY_SERVER_STATE_BASE,"
            " c.RAY_SERVE_HAPROXY_CONFIG_FILE_LOC, c.RAY_SERVE_HAPROXY_SOCKET_PATH,"
            " c.RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH]))")
    done = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", "HOME": "/home/ray"},
                          capture_output=True, text=True, timeout=120, check=True)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_place_ray_writes_is_an_emptydir_mount(variant):
    wanted = ray_write_locations()
    for container, pod in containers(variant):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert all("emptyDir" in volumes[name] for name in mounts.values()), "a writable mount that is not an emptyDir"
        assert set(mounts) == set(security.WRITABLE_PATHS.values())
        for path in wanted:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{path} is read-only"
        # KubeRay shares the volume at /tmp/ray between the head and its autoscaler only when it finds it there.
        assert mounts["/tmp/ray"] == "ray-logs"
    assert all(set(v) == {"name", "emptyDir"} for spec in pod_specs(variant) for v in spec["volumes"])


# --- NetworkPolicy: evaluated the way the API defines it, against pods that should and should not get in ---

def _matches(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {"Exists": present, "DoesNotExist": not present,
              "In": present and value in expr.get("values", []),
              "NotIn": not present or value not in expr.get("values", [])}[expr["operator"]]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict, pod: dict, namespace: dict) -> bool:
    if "namespaceSelector" in peer:
        same_namespace_only = False
        if not _matches(peer["namespaceSelector"], namespace):
            return False
    else:
        same_namespace_only = True
    if same_namespace_only and namespace["kubernetes.io/metadata.name"] != NAMESPACE:
        return False
    return _matches(peer.get("podSelector", {}), pod)


def admitted(policy: dict, target: dict, source: dict, namespace: str, port: int) -> bool:
    """Whether `policy` lets a pod labelled `source` in `namespace` reach `port` on a pod labelled `target`."""
    spec = policy["spec"]
    assert _matches(spec["podSelector"], target), "the policy does not select this pod"
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in spec["ingress"]:
        ports_ok = "ports" not in rule or any(p["port"] == port and p.get("protocol", "TCP") == "TCP"
                                              for p in rule["ports"])
        if ports_ok and any(_peer_admits(peer, source, ns_labels) for peer in rule["from"]):
            return True
    return False


def ray_pod(node_type: str, cluster: str = "resfam-serve-raycluster-abcde") -> dict:
    """The labels KubeRay puts on a pod it makes from our template."""
    return {**security.APP_LABEL, "ray.io/cluster": cluster, "ray.io/node-type": node_type,
            "ray.io/is-ray-node": "yes", "app.kubernetes.io/name": "kuberay"}


PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "prometheus": "kps"}
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}
WEB = {"app": "web"}
RAY_PORTS = [6379, 10001, 12345, 30001, 52365]   # GCS, client, a worker port, a direct-ingress port, agent
CASES = [  # source labels, source namespace, port, admitted
    *[(ray_pod("worker"), NAMESPACE, port, True) for port in RAY_PORTS + [8000, 8080, 8265]],
    # a pod of the next cluster (RayService upgrade) talks to the old one's Serve: same app, other cluster name
    (ray_pod("head", "resfam-serve-raycluster-fghij"), NAMESPACE, 6379, True),
    *[(WEB, NAMESPACE, port, port == 8000) for port in RAY_PORTS + [8000, 8080, 8265]],
    ({"ray.io/cluster": "someone-else", "ray.io/node-type": "worker"}, NAMESPACE, 6379, False),
    (WEB, "other", 8000, False),
    *[(PROMETHEUS, "monitoring", port, port in (8080, 8000)) for port in RAY_PORTS + [8000, 8080, 8265]],
    (PROMETHEUS, "other", 8080, False),
    (WEB, "monitoring", 8080, False),
    *[(OPERATOR, "kuberay-system", port, port in (8265, 8000)) for port in RAY_PORTS + [8000, 8080, 8265]],
    (OPERATOR, NAMESPACE, 8265, False),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_admits_exactly_what_it_should(variant):
    policy = security_kinds(variant)["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for node_type in ("head", "worker"):
        target = ray_pod(node_type)
        wrong = [(src, ns, port) for src, ns, port, expected in CASES
                 if admitted(policy, target, src, ns, port) != expected]
        assert wrong == [], f"{node_type}: admitted != expected for {wrong}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_selects_the_pods_made_from_both_templates(variant):
    selector = security_kinds(variant)["NetworkPolicy"]["spec"]["podSelector"]
    cluster = cluster_config(variant)
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        labels = group["template"]["metadata"]["labels"]
        assert _matches(selector, {**labels, "ray.io/cluster": "resfam-serve-raycluster-abcde"})


def test_network_policy_selectors_are_configurable():
    access = Access(client_namespaces=("web",), prometheus_namespace="observability",
                    prometheus_pods={"app": "prom"})
    policy = security.network_policy(access)
    target = ray_pod("head")
    assert admitted(policy, target, WEB, "web", 8000) and not admitted(policy, target, WEB, "web", 6379)
    assert admitted(policy, target, {"app": "prom"}, "observability", 8080)
    assert not admitted(policy, target, PROMETHEUS, "monitoring", 8080)
    assert k8s_schemas.errors(policy) == []


def test_render_cli_takes_the_network_flags(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deploy", "render", "--out", str(tmp_path),
                           "--client-namespace", "web", "--prometheus-pod-label", "app=prom"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    policy = next(d for d in yaml.safe_load_all((tmp_path / "k8s/cpu/security.yaml").read_text())
                  if d["kind"] == "NetworkPolicy")
    assert admitted(policy, ray_pod("worker"), WEB, "web", 8000)
    assert admitted(policy, ray_pod("worker"), {"app": "prom"}, "monitoring", 8080)
    bad = subprocess.run([sys.executable, "-m", "deploy", "render", "--check", "--prometheus-pod-label", "prom"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


# --- Secrets and the database ---

def secret_refs(variant: str) -> dict[str, dict]:
    refs = {}
    for container, _ in containers(variant):
        for env in container.get("env", []):
            if "valueFrom" in env:
                assert env["name"] not in refs or refs[env["name"]] == env["valueFrom"]["secretKeyRef"]
                refs[env["name"]] = env["valueFrom"]["secretKeyRef"]
    return refs


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ray_container_reads_both_secrets(variant):
    for container, _ in containers(variant)[:-1]:   # the autoscaler sidecar needs neither
        names = {e["name"] for e in container["env"] if "valueFrom" in e}
        assert names == {credentials.FEEDBACK_URL_ENV, credentials.API_KEYS_ENV}
    assert "env" not in cluster_config(variant)["autoscalerOptions"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_feedback_url_comes_from_the_rendered_database_cluster(variant):
    (cluster,) = documents("k8s/postgres/cluster.yaml")
    ref = secret_refs(variant)[credentials.FEEDBACK_URL_ENV]
    # CloudNativePG names the owner's Secret <cluster>-app and puts the connection URI under `uri`.
    assert ref == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == (postgres.DATABASE, postgres.OWNER)
    assert cluster["spec"]["instances"] >= 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_api_keys_come_from_the_secret_the_example_shows(variant):
    (example,) = documents("k8s/examples/api-keys-secret.yaml")
    ref = secret_refs(variant)[credentials.API_KEYS_ENV]
    assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"]
    assert "optional" not in ref   # required: a missing Secret stops the pod instead of serving unauthenticated
    text = example["stringData"][ref["key"]]
    keys = parse_keys(text, "example")   # the shape the server reads from RESFAM_API_KEYS
    assert keys and all(credentials.PLACEHOLDER in entry["key"] for entry in json.loads(text))


def test_no_credentials_in_any_rendered_file():
    url_with_password = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")
    for rel, text in render().items():
        assert not url_with_password.search(text), rel
        for document in (yaml.safe_load_all(text) if rel.endswith(".yaml") else []):
            if document and document["kind"] == "Secret":
                assert rel.startswith("k8s/examples/"), f"{rel}: a real Secret must not be committed"
                assert all(credentials.PLACEHOLDER in value for value in document["stringData"].values())
                assert "data" not in document


# --- Scale and disruption ---

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cluster_runs_at_least_two_ingress_replicas(variant):
    app = yaml.safe_load(documents(f"k8s/{variant}/rayservice.yaml")[0]["spec"]["serveConfigV2"])["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    assert ingress["num_replicas"] >= CLUSTER_MIN_INGRESS >= 2


def test_cluster_ingress_raises_small_counts_and_keeps_larger_ones():
    def ingress(section: dict):
        return cluster_ingress(parse_config({"models": [{"name": "a"}], "ingress": section}).ingress)
    assert ingress({}).replicas == 2 and ingress({"replicas": 5}).replicas == 5
    scaled = ingress({"autoscaling": {"min_replicas": 1, "max_replicas": 1}}).autoscaling
    assert (scaled.min_replicas, scaled.max_replicas) == (2, 2)
    scaled = ingress({"autoscaling": {"min_replicas": 3, "max_replicas": 8, "target_ongoing_requests": 50}}).autoscaling
    assert (scaled.min_replicas, scaled.max_replicas, scaled.target_ongoing_requests) == (3, 8, 50)


@pytest.mark.parametrize("variant", VARIANTS)
def test_workers_run_without_an_api_token_and_keep_one_pod_through_drains(variant):
    kinds = security_kinds(variant)
    account = kinds["ServiceAccount"]
    assert account["automountServiceAccountToken"] is False
    worker = cluster_config(variant)["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["serviceAccountName"] == account["metadata"]["name"]
    # The head keeps KubeRay's account: its autoscaler sidecar scales workers through the API.
    assert "serviceAccountName" not in cluster_config(variant)["headGroupSpec"]["template"]["spec"]
    budget = kinds["PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1 and "maxUnavailable" not in budget["spec"]
    assert _matches(budget["spec"]["selector"], ray_pod("worker"))
    assert not _matches(budget["spec"]["selector"], ray_pod("head"))


# --- The schemas are strict for the new kinds too ---

TYPOS = {
    "NetworkPolicy podSelectors": ("gpu/security.yaml", "NetworkPolicy",
                                   lambda d: d["spec"].update(podSelectors={})),
    "NetworkPolicy port as a list": ("gpu/security.yaml", "NetworkPolicy",
                                     lambda d: d["spec"]["ingress"][1]["ports"][0].update(port=[8000])),
    "PodDisruptionBudget minAvailible": ("gpu/security.yaml", "PodDisruptionBudget",
                                         lambda d: d["spec"].update(minAvailible=1)),
    "ServiceAccount automountToken": ("gpu/security.yaml", "ServiceAccount",
                                      lambda d: d.update(automountToken=False)),
    "Cluster instance (singular)": ("postgres/cluster.yaml", "Cluster", lambda d: d["spec"].update(instance=2)),
    "Cluster initdb dbname": ("postgres/cluster.yaml", "Cluster",
                              lambda d: d["spec"]["bootstrap"]["initdb"].update(dbname="resfam")),
    "Secret stringdata": ("examples/api-keys-secret.yaml", "Secret",
                          lambda d: d.update(stringdata=d.pop("stringData"))),
}


@pytest.mark.parametrize("case", TYPOS.values(), ids=TYPOS.keys())
def test_a_typo_in_a_new_object_fails_validation(case):
    rel, kind, mutate = case
    document = copy.deepcopy(next(d for d in documents(f"k8s/{rel}") if d["kind"] == kind))
    assert k8s_schemas.errors(document) == []
    mutate(document)
    assert k8s_schemas.errors(document), f"the schema accepted a broken {kind}"
