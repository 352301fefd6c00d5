"""deploy/k8s: generated from the config (no drift), valid against the pinned schemas, typos rejected."""
import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as build_serve_app
from ray.serve import Application
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from deploy.render import DEPLOY_DIR, render, stale_files
from deploy.serve_config import IMAGE_APP_DIR
from deploy.variants import RAY_VERSION, VARIANTS
from serve.config import ConfigError, load_config
from serve.cluster.ray_env import front_door_environment
from tests import k8s_schemas

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((DEPLOY_DIR / "k8s").glob("*/*.yaml"))


def documents(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def ray_service(variant: str) -> dict:
    return documents(DEPLOY_DIR / "k8s" / variant / "rayservice.yaml")[0]


def serve_config_v2(variant: str) -> dict:
    return yaml.safe_load(ray_service(variant)["spec"]["serveConfigV2"])


def test_committed_files_match_a_fresh_render():
    stale = stale_files(render())
    assert not stale, f"re-run `python -m deploy render`; stale: {stale}"


def test_render_check_flags_a_hand_edit(tmp_path):
    rendered = render()
    edited = {**rendered, "k8s/gpu/rayservice.yaml": rendered["k8s/gpu/rayservice.yaml"].replace("0.5", "1.0")}
    for rel, text in edited.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert stale_files(rendered, tmp_path) == ["k8s/gpu/rayservice.yaml"]


def test_render_cli_check_passes_on_committed_files():
    done = subprocess.run([sys.executable, "-m", "deploy", "render", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_validates_against_its_schema(path):
    for document in documents(path):
        assert k8s_schemas.errors(document) == [], f"{path}: {document['kind']}"


def _worker(doc: dict) -> dict:
    return doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


TYPOS = {
    "rayClusterSpec (pre-v1 name)": lambda d: _rename(d["spec"], "rayClusterConfig", "rayClusterSpec"),
    "worker replica: 2": lambda d: _worker(d).update(replica=2),
    "toleration (singular)": lambda d: _rename(_worker(d)["template"]["spec"], "tolerations", "toleration"),
    "container resource typo": lambda d: _worker(d)["template"]["spec"]["containers"][0].update(resource={}),
    "metadata typo": lambda d: d["metadata"].update(label={"a": "b"}),
    "unquoted rayStartParams number": lambda d: _worker(d)["rayStartParams"].update({"num-gpus": 1}),
}


@pytest.mark.parametrize("mutate", TYPOS.values(), ids=TYPOS.keys())
def test_a_typo_in_the_rayservice_fails_validation(mutate):
    document = copy.deepcopy(ray_service("gpu"))
    mutate(document)
    assert k8s_schemas.errors(document), "the tightened schema accepted a broken RayService"


def test_the_crd_schema_as_shipped_would_miss_the_typo():
    """Why the schemas are tightened: the API server would prune the unknown field and run without it."""
    crd_file = k8s_schemas.shared_dir() / "schemas" / k8s_schemas.CRD_FILES["ray.io/v1", "RayService"]
    crd = yaml.safe_load(crd_file.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    as_shipped = jsonschema.Draft7Validator(schema)
    document = copy.deepcopy(ray_service("gpu"))
    _worker(document)["replica"] = 2
    assert list(as_shipped.iter_errors(document)) == [] and k8s_schemas.errors(document)


def test_typos_in_service_and_podmonitor_fail_validation():
    service = documents(DEPLOY_DIR / "k8s" / "gpu" / "service.yaml")[0]
    service["spec"]["ports"][0]["prot"] = 8000
    monitor = documents(DEPLOY_DIR / "k8s" / "gpu" / "podmonitors.yaml")[0]
    _rename(monitor["spec"], "podMetricsEndpoints", "podMetricEndpoints")
    assert k8s_schemas.errors(service)
    assert k8s_schemas.errors(monitor)


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_v2_validates_with_ray_serves_schema(variant):
    config = ServeDeploySchema.model_validate(serve_config_v2(variant))
    app = config.applications[0]
    assert app.import_path == "serve.cluster.app:app_builder"
    classifiers = [d for d in app.deployments if d.name.startswith("classifier-")]
    assert classifiers and all(d.autoscaling_config["target_ongoing_requests"] > 0 for d in classifiers)


def ignored_keys(config: dict) -> list[str]:
    """Ray Serve's schema ignores unknown keys (forward compatibility), so a typo would vanish silently."""
    def unknown(data: dict, model: type, where: str) -> list[str]:
        return [f"{where}{key}" for key in data if key not in model.model_fields]
    found = unknown(config, ServeDeploySchema, "")
    for i, app in enumerate(config.get("applications", [])):
        found += unknown(app, ServeApplicationSchema, f"applications.{i}.")
        for j, deployment in enumerate(app.get("deployments", [])):
            found += unknown(deployment, DeploymentSchema, f"applications.{i}.deployments.{j}.")
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_v2_has_no_key_ray_serve_would_ignore(variant):
    assert ignored_keys(serve_config_v2(variant)) == []


def test_serve_config_v2_typos_are_caught():
    broken = serve_config_v2("gpu")
    broken["applications"][0]["deployments"][0]["num_replica"] = 2
    broken["applications"][0]["deployments"][1]["max_ongoing_requests"] = "many"
    assert ignored_keys(broken) == ["applications.0.deployments.0.num_replica"]
    with pytest.raises(ValidationError, match="max_ongoing_requests"):
        ServeDeploySchema.model_validate(broken)


POD_KEYS = '[{"name": "test", "key": "k-test-0123456789abcdef", "scopes": ["read"]}]'


@pytest.fixture(autouse=True)
def pod_environment(monkeypatch):
    """The pods carry the API keys (a Secret); without them the cluster's app refuses to build."""
    monkeypatch.setenv("RESFAM_API_KEYS", POD_KEYS)


def built_by_ray_serve(app: dict) -> Application:
    """The application as Ray Serve builds it from a serve config entry (the path KubeRay takes)."""
    module, function = app["import_path"].split(":")
    builder = getattr(__import__(module, fromlist=[function]), function)
    args = {**app["args"], "config": app["args"]["config"].replace(IMAGE_APP_DIR, str(ROOT))}
    return call_user_app_builder_with_args_if_necessary(builder, args)


def test_rendered_args_reach_app_builder_as_ray_serve_passes_them():
    """Ray Serve hands the builder a plain dict unless the annotation is a pydantic class."""
    assert isinstance(built_by_ray_serve(serve_config_v2("cpu")["applications"][0]), Application)


def test_the_cluster_app_refuses_to_build_without_keys(monkeypatch):
    monkeypatch.delenv("RESFAM_API_KEYS")
    with pytest.raises(ConfigError, match="no API key is configured"):
        built_by_ray_serve(serve_config_v2("cpu")["applications"][0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_overrides_name_exactly_the_classifiers_the_app_builds(variant):
    app = serve_config_v2(variant)["applications"][0]
    built = build_serve_app(built_by_ray_serve(app), name=app["name"])
    classifiers = {d.name for d in built.deployments if d.name.startswith("classifier-")}
    overridden = {d["name"] for d in app["deployments"]}
    assert overridden == classifiers | {"Ingress"} and classifiers
    assert {"Ingress"} <= {d.name for d in built.deployments}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_experiment_travels_as_the_ingress_user_config(variant):
    app = serve_config_v2(variant)["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    shipped = load_config(ROOT / "serve" / "config.yaml").experiment
    assert ingress["user_config"] == {"experiment": shipped.model_dump(), "keys": None}
    assert ingress["user_config"]["experiment"]["arms"]


def test_gpu_variant_puts_gpus_on_workers_only():
    cluster = ray_service("gpu")["spec"]["rayClusterConfig"]
    head, worker = cluster["headGroupSpec"], cluster["workerGroupSpecs"][0]
    head_resources = head["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_resources["limits"] and head["rayStartParams"]["num-gpus"] == "0"
    worker_resources = worker["template"]["spec"]["containers"][0]["resources"]
    assert worker_resources["limits"]["nvidia.com/gpu"] == worker_resources["requests"]["nvidia.com/gpu"] == "1"
    pod = worker["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    gpus = [d["ray_actor_options"]["num_gpus"] for d in serve_config_v2("gpu")["applications"][0]["deployments"]
            if d["name"].startswith("classifier-")]
    assert gpus and all(g > 0 for g in gpus)


def test_cpu_variant_asks_for_no_gpu_anywhere():
    assert "nvidia.com/gpu" not in (DEPLOY_DIR / "k8s" / "cpu" / "rayservice.yaml").read_text()
    gpus = [d["ray_actor_options"]["num_gpus"] for d in serve_config_v2("cpu")["applications"][0]["deployments"]
            if d["name"].startswith("classifier-")]
    assert gpus == [0] * len(gpus)


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_and_monitors_reach_the_named_ports(variant):
    cluster = ray_service(variant)["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == RAY_VERSION
    head_container = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    head_ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    service = documents(DEPLOY_DIR / "k8s" / variant / "service.yaml")[0]
    assert service["spec"]["ports"][0]["port"] == head_ports[service["spec"]["ports"][0]["targetPort"]] == 8000
    scraped = {ep["port"] for m in documents(DEPLOY_DIR / "k8s" / variant / "podmonitors.yaml")
               for ep in m["spec"]["podMetricsEndpoints"]}
    assert scraped == {"metrics", "serve"} and scraped <= head_ports.keys()
    assert head_ports["metrics"] == int(cluster["headGroupSpec"]["rayStartParams"]["metrics-export-port"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ray_pod_starts_with_rays_proxy_and_its_guard(variant):
    cluster = ray_service(variant)["spec"]["rayClusterConfig"]
    wanted = front_door_environment(load_config(ROOT / "serve" / "config.yaml").on_cluster().http)
    assert wanted["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and "RESFAM_PROXY_HEADER_TIMEOUT_S" in wanted
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        assert {e["name"]: e["value"] for e in container["env"] if "value" in e} == wanted
