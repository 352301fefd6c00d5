from pathlib import Path

import pytest
import yaml

from ray.serve import Deployment
from ray.serve._private.build_app import build_app as build_serve_app

from serve.cluster.app import ROUTER, build_app
from serve.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid_and_names_both_default_models():
    config = load_config(ROOT / "serve" / "config.yaml")
    assert {m.name for m in config.models} == {"seresnet20_digits", "resnext20_digits"}
    assert config.http.host == "127.0.0.1" and config.http.port == 8000
    assert all(m.max_batch_size > 1 for m in config.models)


def test_shipped_config_runs_a_50_50_split_between_the_default_models():
    experiment = load_config(ROOT / "serve" / "config.yaml").experiment
    assert experiment.enabled and experiment.mode == "split" and experiment.sticky_header == "X-User-Id"
    assert [(a.model, a.weight) for a in experiment.arms] == [("seresnet20_digits", 50), ("resnext20_digits", 50)]


def test_one_ingress_replica_unless_configured():
    assert load_config(ROOT / "serve" / "config.yaml").ingress.replicas == 1  # what `make serve` runs
    assert parse_config({"models": [{"name": "a"}], "ingress": {"replicas": 3}}).ingress.replicas == 3
    autoscaling = {"min_replicas": 2, "max_replicas": 6}
    scaled = parse_config({"models": [{"name": "a"}], "ingress": {"autoscaling": autoscaling}})
    assert scaled.ingress.autoscaling.min_replicas == 2 and scaled.ingress.autoscaling.max_replicas == 6


def _ingress_deployment(ingress: dict) -> Deployment:
    """The Ingress as Ray Serve would deploy it, built without starting Ray."""
    data = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    built = build_serve_app(build_app(parse_config({**data, "ingress": ingress})), name="resfam")
    return next(d for d in built.deployments if d.name == "Ingress")


def test_build_app_gives_the_ingress_the_configured_replicas():
    assert _ingress_deployment({"replicas": 3}).num_replicas == 3
    autoscaled = _ingress_deployment({"autoscaling": {"min_replicas": 2, "max_replicas": 5}})._deployment_config
    assert (autoscaled.autoscaling_config.min_replicas, autoscaled.autoscaling_config.max_replicas) == (2, 5)
    assert _ingress_deployment({})._deployment_config.autoscaling_config is None


def _two(second_arm: dict, versions: tuple[str, ...] = ("latest",), **experiment) -> dict:
    models = [{"name": "a"}] + [{"name": "b", "version": v} for v in versions]
    return {"models": models, "experiment": {"arms": [{"model": "a", "weight": 1}, second_arm], **experiment}}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"models": [{"name": "a", "max_batch_size": 0}]}, "models.0.max_batch_size"),
        ({"models": [{"name": "a", "batch_wait_timeout_s": -1}]}, "models.0.batch_wait_timeout_s"),
        ({"models": [{"name": "a", "providers": "tpu"}]}, "models.0.providers"),
        ({"models": [{"name": "a", "replica": 2}]}, "models.0.replica"),
        ({"models": [{"name": "../etc"}]}, "models.0.name"),
        ({"models": []}, "models"),
        ({"models": [{"name": "a"}], "default_model": "b"}, "default_model"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
        (_two({"model": "c", "weight": 1}), "'c' is not among the served models"),
        (_two({"model": "b/7", "weight": 1}, versions=("1", "2")), "version '7' is not served"),
        (_two({"model": "b", "weight": 0}), "experiment.arms.1.weight"),
        (_two({"model": "a", "weight": 1}), "arms must name different models"),
        (_two({"model": "b"}, mode="canary"), "experiment.mode"),
        (_two({"model": "b"}, primary="z"), "primary 'z' is not one of the arms"),
        ({"models": [{"name": "a"}], "experiment": {"arms": [{"model": "a"}]}}, "experiment.arms"),
        ({"models": [{"name": "a"}], "feedback": {"retention_s": 0}}, "feedback.retention_s"),
        ({"models": [{"name": "a"}], "ingress": {"replicas": 0}}, "ingress.replicas"),
        ({"models": [{"name": "a"}], "ingress": {"replica": 2}}, "ingress.replica"),
        ({"models": [{"name": "a"}], "ingress": {"replicas": 2, "autoscaling": {"max_replicas": 4}}},
         "either replicas or autoscaling"),
        ({"models": [{"name": "a"}], "ingress": {"autoscaling": {"min_replicas": 0}}}, "at least 1"),
        ({"models": [{"name": "a"}], "ingress": {"autoscaling": {"min_replicas": 5, "max_replicas": 2}}},
         "cannot exceed max_replicas"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(change)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_every_routed_deployment_backs_off_at_most_the_router_cap():
    data = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    built = build_serve_app(build_app(parse_config(data).on_cluster()), name="resfam")
    routed = [d for d in built.deployments if d.name != "MetricsHub"]
    assert {d.name for d in routed} >= {"Ingress", "classifier-seresnet20_digits", "classifier-resnext20_digits"}
    for deployment in routed:
        assert deployment._deployment_config.request_router_config.max_backoff_s == ROUTER["max_backoff_s"], \
            deployment.name


def _shipped_with(*runs_in: str, num_gpus: tuple[float, ...] = (0, 0)) -> dict:
    data = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    for model, where, gpus in zip(data["models"], runs_in, num_gpus):
        model.update(runs_in=where, num_gpus=gpus)
    return data


def test_models_run_in_a_replica_unless_configured_and_the_shipped_ones_in_the_ingress():
    assert parse_config({"models": [{"name": "a"}]}).models[0].runs_in == "replica"
    assert {m.runs_in for m in load_config(ROOT / "serve" / "config.yaml").models} == {"ingress"}  # make serve


def test_on_a_cluster_every_model_runs_in_a_replica_behind_rays_proxy_and_nothing_else_changes():
    config = parse_config(_shipped_with("ingress", "replica"))
    assert config.http.proxy == "haproxy"  # the shipped front door
    clustered = config.on_cluster()
    assert [m.runs_in for m in clustered.models] == ["replica", "replica"] and clustered.http.proxy == "ray"
    assert [m.model_dump(exclude={"runs_in"}) for m in clustered.models] == \
        [m.model_dump(exclude={"runs_in"}) for m in config.models]
    assert clustered.model_copy(update={"models": config.models, "http": config.http}) == config


def test_an_in_ingress_model_has_no_deployment_and_its_gpus_go_to_the_ingress():
    data = _shipped_with("ingress", "replica", num_gpus=(0.5, 0))
    built = build_serve_app(build_app(parse_config(data)), name="resfam")
    names = {d.name for d in built.deployments}
    assert names == {"Ingress", "MetricsHub", "classifier-resnext20_digits"}
    both = build_serve_app(build_app(parse_config(_shipped_with("ingress", "ingress", num_gpus=(0.5, 0.25)))),
                           name="resfam")
    ingress = next(d for d in both.deployments if d.name == "Ingress")
    assert {d.name for d in both.deployments} == {"Ingress", "MetricsHub"}
    assert ingress.ray_actor_options["num_gpus"] == 0.75 and ingress.ray_actor_options["num_cpus"] == 0
