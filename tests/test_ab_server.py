"""A/B testing against the live server: arms, bypass, feedback, shadow mode, run-time changes, restarts.

One server for the module (its own port and feedback store); the tests run in file order and
move it through split -> reweighted split -> off and on -> shadow (failing, then healthy) -> restart.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from resfam.data import digits
from serve.ab.experiment import Arm, sticky_arm
from tests.conftest import LiveServer, client_for, default_config, shipped_server
from tests.images import encode, photo_bytes
from tests.test_server import metric_samples, recorded, total

pytestmark = pytest.mark.integration
SE, RX = "seresnet20_digits", "resnext20_digits"
SALT = "se-vs-resnext"
PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def ab(tmp_path_factory) -> LiveServer:
    with shipped_server(tmp_path_factory, "ab") as live:
        yield live


@pytest.fixture(scope="module")
def http(ab: LiveServer) -> httpx.Client:
    yield from client_for(ab)  # no default X-User-Id: anonymous requests are tested too


@pytest.fixture(scope="module")
def digit_pngs():
    test = digits("test", seed=recorded(SE)["metrics"]["split_seed"])
    return [(encode(test[i][0], "PNG"), test.targets[i]) for i in range(len(test))]


def experiment_config(ab: LiveServer, **changes) -> dict:
    config = default_config(ab.port)
    config["experiment"].update(changes)
    return config


def classify(http: httpx.Client, data: bytes, user: str | None = None, **params) -> dict:
    r = http.post("/classify", content=data, params=params, headers={**PNG, **({"X-User-Id": user} if user else {})})
    assert r.status_code == 200, r.text
    return r.json()


def eventually(read, expected, timeout_s: float = 15.0):
    """Metrics from replicas arrive by push: wait until `read()` reaches `expected`."""
    deadline = time.monotonic() + timeout_s
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def test_answers_name_their_arm_and_users_stick_to_it(http):
    arms = [Arm(SE, 50), Arm(RX, 50)]
    users = [f"u{i}" for i in range(24)]
    first = {u: classify(http, photo_bytes(), u, k=1) for u in users}
    for u, body in first.items():
        assert body["arm"] == sticky_arm(arms, u, SALT).name == body["model"]["name"]
        assert classify(http, photo_bytes(), u, k=1)["arm"] == body["arm"]
    assert {b["arm"] for b in first.values()} == {SE, RX}
    anonymous = {classify(http, photo_bytes(), k=1)["arm"] for _ in range(16)}
    assert anonymous == {SE, RX}  # random by weight: both arms within 16 tries (p of not = 2^-15)


def test_naming_a_model_bypasses_the_experiment(http):
    before = metric_samples(http)
    body = classify(http, photo_bytes(), "u1", model=RX)
    assert body["arm"] is None and body["model"]["name"] == RX
    after = metric_samples(http)
    bypass = dict(model=RX, arm="", route="/classify", code="200")
    assert total(after, "resfam_requests_total", **bypass) - total(before, "resfam_requests_total", **bypass) == 1


def test_feedback_is_scored_once_and_bad_feedback_gets_the_right_status(http, digit_pngs):
    data, target = digit_pngs[0]
    body = classify(http, data, "u-feedback")
    arm = body["arm"]
    rid = body["request_id"]
    r = http.post("/feedback", json={"request_id": rid, "label": str(target)})
    assert r.status_code == 200, r.text
    assert r.json() == {"request_id": rid, "image": 0, "arm": arm, "label": str(target), "index": target,
                        "correct": body["predictions"][0]["index"] == target, "counted": True}
    again = http.post("/feedback", json={"request_id": rid, "label": target})  # by index this time
    assert again.status_code == 200 and again.json()["counted"] is False
    cases = [({"request_id": "0" * 32, "label": 1}, 404, "unknown_request"),
             ({"request_id": rid, "label": "cat"}, 422, "unknown_label"),
             ({"request_id": rid, "label": 10}, 422, "unknown_label"),
             ({"request_id": rid}, 422, "bad_parameter"),
             ({"request_id": rid, "label": 1, "image": 1}, 404, "unknown_request")]
    for payload, status, code in cases:
        r = http.post("/feedback", json=payload)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (payload, r.text)
    r = http.post("/feedback", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
    correct = str(body["predictions"][0]["index"] == target).lower()
    assert eventually(lambda: total(metric_samples(http), "resfam_feedback_total", arm=arm, correct=correct), 1) == 1


def test_report_counts_what_was_sent(http, digit_pngs):
    before = {a["arm"]: a for a in http.get("/ab/report").json()["arms"]}
    sent = {SE: [0, 0], RX: [0, 0]}  # [feedback, correct]
    for i, (data, target) in enumerate(digit_pngs[:40]):
        body = classify(http, data, f"report-{i}", k=1)
        ok = body["predictions"][0]["index"] == target
        assert http.post("/feedback", json={"request_id": body["request_id"], "label": target}).json()["counted"]
        sent[body["arm"]][0] += 1
        sent[body["arm"]][1] += ok
    report = http.get("/ab/report").json()
    assert report["experiment"]["mode"] == "split" and [a["arm"] for a in report["arms"]] == [SE, RX]
    for arm in report["arms"]:
        name = arm["arm"]
        assert arm["feedback"] - before[name]["feedback"] == sent[name][0]
        assert arm["correct"] - before[name]["correct"] == sent[name][1]
        assert arm["accuracy_ci95"][0] <= arm["accuracy"] <= arm["accuracy_ci95"][1]
        assert 0 < arm["latency_p50_s"] <= arm["latency_p95_s"] and 0 < arm["mean_confidence"] <= 1
    (cmp,) = report["comparisons"]
    assert 0 <= cmp["p_value"] <= 1 and f"n={cmp['n']}" in cmp["verdict"]
    assert cmp["always_valid"]["verdict"] == report["verdict"]
    low, high = cmp["always_valid"]["confidence_sequence"]
    assert low <= cmp["difference"] <= high


def test_offline_evaluation_sends_every_image_to_every_arm(ab, http, tmp_path):
    before = {a["arm"]: a["feedback"] for a in http.get("/ab/report").json()["arms"]}
    result = subprocess.run([sys.executable, "-m", "serve.ab.evaluate", "--url", ab.url, "--dataset", "digits",
                             "--limit", "24", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(a["arm"], a["n"]) for a in report["arms"]] == [(SE, 24), (RX, 24)]
    assert all(a["route"].startswith("sticky user") for a in report["arms"])
    assert all(a["accuracy_ci95"][0] <= a["accuracy"] <= a["accuracy_ci95"][1] for a in report["arms"])
    (pair,) = report["paired"]
    assert 0 <= pair["mcnemar_p_value"] <= 1 and "paired images" in pair["verdict"]
    assert report["feedback_counted"] == 48
    after = {a["arm"]: a["feedback"] for a in http.get("/ab/report").json()["arms"]}
    assert after == {arm: n + 24 for arm, n in before.items()}
    for name in ("report.md", "accuracy.png", "latency.png"):
        assert (tmp_path / name).stat().st_size > 500


def test_reweighting_under_load_drops_no_request_and_moves_few_users(ab, http):
    users = [f"w{i}" for i in range(200)]
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=ab.url, timeout=60) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/classify", content=photo_bytes(), headers={**PNG, "X-User-Id": users[i % 200]})
                statuses.append(r.status_code)
                i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        ab.reload(experiment_config(ab, mode="split", arms=[{"model": SE, "weight": 60}, {"model": RX, "weight": 40}]))
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    before = {u: sticky_arm([Arm(SE, 50), Arm(RX, 50)], u, SALT).name for u in users}
    after = {u: classify(http, photo_bytes(), u, k=1)["arm"] for u in users}
    assert after == {u: sticky_arm([Arm(SE, 60), Arm(RX, 40)], u, SALT).name for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert len(moved) <= 0.2 * len(users) and all(after[u] == SE for u in moved)


def test_switching_the_experiment_off_and_on_at_run_time(ab, http):
    ab.reload(experiment_config(ab, enabled=False))
    body = classify(http, photo_bytes(), "u1")
    assert body["arm"] is None and body["model"]["name"] == SE  # the default model answers
    assert http.get("/ab/report").json()["experiment"]["enabled"] is False
    ab.reload(experiment_config(ab, enabled=True))
    assert classify(http, photo_bytes(), "u1")["arm"] == sticky_arm([Arm(SE, 50), Arm(RX, 50)], "u1", SALT).name


def test_failing_shadow_is_invisible_to_the_client(ab, http):
    # A shadow timeout far below any real call: every shadow call fails, the primary answers regardless.
    ab.reload(experiment_config(ab, mode="shadow", primary=SE, shadow_timeout_s=0.0001))
    errors = lambda: total(metric_samples(http), "resfam_shadow_errors_total", arm=RX, reason="timeout")  # noqa: E731
    before = errors()
    for i in range(10):
        body = classify(http, photo_bytes(), f"shadow-{i}")
        assert body["arm"] == SE and "error" not in body
    assert eventually(errors, before + 10) == before + 10
    assert total(metric_samples(http), "resfam_shadow_comparisons_total", arm=RX) == 0


def test_shadow_agreement_is_counted_and_paired_with_feedback(ab, http, digit_pngs):
    ab.reload(experiment_config(ab, mode="shadow", primary=SE, shadow_timeout_s=10))
    compared = lambda: total(metric_samples(http), "resfam_shadow_comparisons_total", primary=SE, arm=RX)  # noqa: E731
    before = compared()
    for i, (data, target) in enumerate(digit_pngs[:30]):
        body = classify(http, data, f"pair-{i}", k=1)
        assert body["arm"] == SE
        assert http.post("/feedback", json={"request_id": body["request_id"], "label": target}).status_code == 200
    assert eventually(compared, before + 30) == before + 30
    agreed = total(metric_samples(http), "resfam_shadow_comparisons_total", primary=SE, arm=RX, agree="true")
    assert agreed >= 25  # both models are ~99% accurate on digits
    (pair,) = http.get("/ab/report").json()["shadow"]
    assert pair["primary"] == SE and pair["shadow"] == RX and pair["paired_feedback"] == 30
    assert 0 <= pair["p_value"] <= 1 and pair["agreement"] >= 25 / 30


def test_feedback_and_awaiting_predictions_survive_a_restart(ab, http, digit_pngs):
    data, target = digit_pngs[1]
    given = classify(http, data, "restart-1")
    waiting = classify(http, data, "restart-2")
    assert http.post("/feedback", json={"request_id": given["request_id"], "label": target}).json()["counted"]
    report = http.get("/ab/report").json()
    ab.stop()
    ab.start()
    after = http.get("/ab/report").json()
    assert [(a["arm"], a["feedback"], a["correct"]) for a in after["arms"]] == \
        [(a["arm"], a["feedback"], a["correct"]) for a in report["arms"]]
    assert http.post("/feedback", json={"request_id": given["request_id"], "label": target}).json()["counted"] is False
    r = http.post("/feedback", json={"request_id": waiting["request_id"], "label": target})
    assert r.status_code == 200 and r.json()["counted"] is True
