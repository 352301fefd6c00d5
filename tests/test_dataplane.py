"""The DataPlane and the objects it is made of, without Ray: the shipped models run by ONNX Runtime in-process."""
from __future__ import annotations

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from loadtests.server import ROOT
from serve.ab.recorder import FeedbackRecorder
from serve.ab.router import ExperimentRouter
from serve.ab.store import FeedbackStore
from serve.api.dataplane import DataPlane
from serve.config import Limits, ModelDeployment
from serve.errors import BadParameter, ModelNotFound, PayloadTooLarge, UnknownLabel, UnknownRequest
from serve.metrics import ServeMetrics
from serve.runtime.catalog import ModelCatalog
from serve.runtime.client import ModelClient
from serve.runtime.decoding import Decoding
from serve.runtime.runner import ModelRunner, admission_bound
from tests.images import encode
from tests.inprocess_classifiers import InProcessClassifiers, shipped_keys

SPLIT = {"name": "t", "arms": [{"model": "seresnet20_digits", "weight": 1}, {"model": "resnext20_digits", "weight": 1}]}
SHADOW = {**SPLIT, "mode": "shadow"}


@pytest.fixture(scope="module")
def digits_pngs() -> list[tuple[bytes, int]]:
    from resfam.data import digits

    test = digits("test")
    return [(encode(test[i][0], "PNG"), int(test[i][1])) for i in range(6)]


@pytest.fixture(scope="module")
def catalog() -> ModelCatalog:
    return ModelCatalog(ROOT / "models", shipped_keys(ROOT / "models"), "seresnet20_digits")


@pytest.fixture(scope="module")
def classifiers(catalog: ModelCatalog) -> InProcessClassifiers:
    return InProcessClassifiers(list(catalog.artifacts.values()))


def plane_of(tmp_path, catalog, classifiers, metrics: ServeMetrics | None = None) -> DataPlane:
    metrics = metrics or ServeMetrics()
    recorder = FeedbackRecorder(FeedbackStore(tmp_path / "f.sqlite", 1000, 3600), metrics)
    return DataPlane(catalog, classifiers, recorder, metrics, Limits(max_images_per_request=4))


@pytest.fixture
def plane(tmp_path, catalog, classifiers) -> DataPlane:
    return plane_of(tmp_path, catalog, classifiers)


def counter(metrics: ServeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# The experiment router

def test_router_routes_nothing_without_an_experiment_or_when_a_model_is_named(catalog):
    router = ExperimentRouter()
    assert router.choose(None, {}) is None
    router.reconfigure(SPLIT, catalog.resolve)
    assert router.choose("resnext20_digits", {"X-User-Id": "u"}) is None
    router.reconfigure({**SPLIT, "enabled": False}, catalog.resolve)
    assert router.choose(None, {"X-User-Id": "u"}) is None


def test_router_is_sticky_and_uses_both_arms(catalog):
    router = ExperimentRouter()
    router.reconfigure(SPLIT, catalog.resolve)
    arms = {u: router.choose(None, {"X-User-Id": u}) for u in map(str, range(200))}
    assert all(router.choose(None, {"X-User-Id": u}) == arm for u, arm in arms.items())
    assert set(arms.values()) == {"seresnet20_digits", "resnext20_digits"}
    assert router.shadow_arms(arms["0"]) == []


def test_router_in_shadow_mode_answers_from_the_primary_and_mirrors_the_rest(catalog):
    router = ExperimentRouter()
    router.reconfigure(SHADOW, catalog.resolve)
    assert {router.choose(None, {"X-User-Id": u}) for u in map(str, range(50))} == {"seresnet20_digits"}
    assert router.shadow_arms("seresnet20_digits") == ["resnext20_digits"]
    assert router.shadow_arms(None) == []


def test_a_bad_update_leaves_the_running_experiment_in_place(catalog):
    router = ExperimentRouter()
    router.reconfigure(SPLIT, catalog.resolve)
    bad = {**SPLIT, "arms": [{"model": "seresnet20_digits"}, {"model": "nonexistent"}]}
    with pytest.raises(ModelNotFound):
        router.reconfigure(bad, catalog.resolve)
    assert [a.name for a in router.state.arms] == ["seresnet20_digits", "resnext20_digits"]


# The catalog

def test_catalog_resolves_names_versions_and_refuses_unknown(catalog):
    assert catalog.resolve(None).name == "seresnet20_digits"
    assert catalog.resolve("resnext20_digits").key == "resnext20_digits/1"
    assert catalog.resolve_versioned("resnext20_digits", "1").key == "resnext20_digits/1"
    assert catalog.versions("resnext20_digits") == ["1"]
    for wrong in ("nope", "resnext20_digits/9"):
        with pytest.raises(ModelNotFound):
            catalog.resolve(wrong)
    with pytest.raises(ModelNotFound):
        catalog.model("nope")


# The data plane: classify, record, feedback, report

def test_classify_answers_what_the_model_computes(plane, classifiers, digits_pngs):
    png, _ = digits_pngs[0]
    plan = plane.plan_classify("resnext20_digits", "3", {})
    body = asyncio.run(plane.classify(plan, [png], 0.0))
    probs = asyncio.run(classifiers.classify_encoded([png], plan.artifact))[0]
    assert body["arm"] is None and body["model"]["name"] == "resnext20_digits"
    assert [p["index"] for p in body["predictions"]] == list(np.argsort(-probs)[:3])
    assert body["predictions"][0]["score"] == pytest.approx(float(probs.max()))


def test_a_wrong_model_or_k_fails_before_any_image_is_read(plane):
    with pytest.raises(ModelNotFound):
        plane.plan_classify("nope", None, {})
    for k in ("0", "11", "x"):
        with pytest.raises(BadParameter):
            plane.plan_classify("seresnet20_digits", k, {})


def test_feedback_on_an_experiment_answer_is_scored_once_and_reported(plane, digits_pngs):
    plane.reconfigure(SPLIT)
    answers = []
    for i, (png, label) in enumerate(digits_pngs):
        plan = plane.plan_classify(None, None, {"X-User-Id": f"user{i}"})
        answers.append((asyncio.run(plane.classify(plan, [png], 0.0)), label))
    for body, label in answers:
        scored = asyncio.run(plane.feedback(f'{{"request_id": "{body["request_id"]}", "label": {label}}}'.encode()))
        assert scored["counted"] and scored["arm"] == body["arm"]
        assert scored["correct"] == (body["predictions"][0]["index"] == label)
    again = asyncio.run(plane.feedback(f'{{"request_id": "{answers[0][0]["request_id"]}", "label": 0}}'.encode()))
    assert again["counted"] is False
    report = asyncio.run(plane.report())
    per_arm = {a["arm"]: a for a in report["arms"]}
    for arm in per_arm:
        mine = [(b, lab) for b, lab in answers if b["arm"] == arm]
        assert per_arm[arm]["feedback"] == len(mine)
        assert per_arm[arm]["correct"] == sum(b["predictions"][0]["index"] == lab for b, lab in mine)
    correct = sum(b["predictions"][0]["index"] == lab for b, lab in answers)
    total = sum(counter(plane.metrics, "resfam_feedback_total", model=m, arm=a, correct=c)
                for m in ("seresnet20_digits", "resnext20_digits") for a in per_arm for c in ("true",))
    assert total == correct


def test_feedback_for_an_unknown_request_or_label_is_refused(plane, digits_pngs):
    with pytest.raises(UnknownRequest):
        asyncio.run(plane.feedback(b'{"request_id": "never-served", "label": 1}'))
    body = asyncio.run(plane.classify(plane.plan_classify(None, None, {}), [digits_pngs[0][0]], 0.0))
    with pytest.raises(UnknownLabel):
        asyncio.run(plane.feedback(f'{{"request_id": "{body["request_id"]}", "label": "cat"}}'.encode()))


def test_shadow_mode_mirrors_to_the_other_arm_and_counts_agreement(plane, digits_pngs):
    plane.reconfigure(SHADOW)

    async def run() -> None:
        for png, _ in digits_pngs:
            body = await plane.classify(plane.plan_classify(None, None, {}), [png], 0.0)
            assert body["arm"] == "seresnet20_digits"
        await asyncio.gather(*plane.shadow.tasks)

    asyncio.run(run())
    compared = sum(counter(plane.metrics, "resfam_shadow_comparisons_total", primary="seresnet20_digits",
                           arm="resnext20_digits", agree=a) for a in ("true", "false"))
    assert compared == len(digits_pngs)
    report = asyncio.run(plane.report())
    assert report["shadow"][0]["compared"] == len(digits_pngs)


def test_v2_infer_takes_tensors_and_images_and_bounds_the_image_count(plane, classifiers, digits_pngs):
    artifact = plane.catalog.resolve("seresnet20_digits")
    tensor = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    header = ('{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 32, 32], '
              f'"parameters": {{"binary_data_size": {tensor.nbytes}}}}}]}}').encode()
    answer = asyncio.run(plane.infer_v2(artifact, header + tensor.tobytes(), str(len(header))))
    expected = asyncio.run(classifiers.infer(artifact, tensor))
    assert answer["outputs"][0]["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 10), expected, rtol=1e-6)
    pngs = [png for png, _ in digits_pngs[:5]]
    raw = b"".join(struct.pack("<I", len(p)) + p for p in pngs)
    header = ('{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [5], '
              f'"parameters": {{"binary_data_size": {len(raw)}}}}}]}}').encode()
    with pytest.raises(PayloadTooLarge):  # this plane's limit is 4 images
        asyncio.run(plane.infer_v2(artifact, header + raw, str(len(header))))
    assert plane.v2_metadata("seresnet20_digits", None)["versions"] == ["1"]


# A model run in the ingress (runs_in: ingress): ModelClient calls its ModelRunner in this process

def test_an_in_ingress_model_answers_what_the_replica_path_computes(tmp_path, catalog, plane, digits_pngs):
    metrics = ServeMetrics()
    decoding = {key: Decoding("ingress", "exact", 64 << 20, 1.0) for key in catalog.artifacts}
    specs = {key: ModelDeployment(name=a.name, version=a.version, providers="cpu") for key, a in catalog.artifacts.items()}
    runners = {key: ModelRunner(spec, ROOT / "models", decoding[key], metrics, [], admission_bound(spec))
               for key, spec in specs.items()}
    client = ModelClient({}, decoding, 40_000_000, ThreadPoolExecutor(2), metrics, runners)
    local = plane_of(tmp_path, catalog, client, metrics)
    pngs = [png for png, _ in digits_pngs]
    tensor = np.random.default_rng(1).standard_normal((3, 1, 32, 32)).astype(np.float32)

    async def answers(on: DataPlane) -> list:
        found = []
        for model in ("seresnet20_digits", "resnext20_digits"):
            plan = on.plan_classify(model, "10", {})
            found.append((await on.classify(plan, pngs[:1], 0.0))["predictions"])
            found.append((await on.classify(plan, pngs[1:4], 0.0))["results"])
            found.append(await on.classifiers.infer(plan.artifact, tensor))
        return found

    mine, reference = asyncio.run(answers(local)), asyncio.run(answers(plane))
    for got, expected in zip(mine, reference):
        if isinstance(got, np.ndarray):
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        else:
            assert got == expected
    labels = {"model": "resnext20_digits", "version": "1"}
    assert metrics.registry.get_sample_value("resfam_preprocess_duration_seconds_count", labels) == 4
    assert local.v2_metadata("resnext20_digits", None)["versions"] == ["1"]
