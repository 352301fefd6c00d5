"""Guarded rollouts in the live server with two ingress replicas: a challenger that answers wrong is rolled
back under load, one as good as the baseline reaches 100%, no request fails as the weights change, and each
step is concluded by exactly one decision (one stored row, one counted decision across the replicas)."""
from __future__ import annotations

import sqlite3

import httpx
import pytest

from loadtests.rollout import (BASELINE, ROTATED, TWIN, drive_rollout, rollout_config, rollout_experiment,
                               rollout_repository)
from serve.api import schemas
from tests.conftest import LiveServer, default_config, free_port
from tests.test_openapi import check_against_document
from tests.test_server import metric_samples, total

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~80 s: CI runs it (-m slow)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LiveServer:
    repository = rollout_repository(tmp_path_factory.mktemp("models"))
    config = rollout_config(repository, rollout_experiment("rollout-rotated", ROTATED))
    config["http"] = {**default_config(0)["http"], "port": free_port()}
    server = LiveServer(config, tmp_path_factory.mktemp("rollout"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stored_decisions(live: LiveServer, experiment: str) -> list[tuple[int, str]]:
    with sqlite3.connect(live.workdir / "feedback.sqlite") as db:
        return db.execute("SELECT step, action FROM rollout_decisions WHERE experiment = ? ORDER BY step",
                          (experiment,)).fetchall()


def counted_decisions(live: LiveServer, experiment: str) -> float:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        samples = metric_samples(http)
    return sum(total(samples, "resfam_rollout_decisions_total", experiment=experiment, action=a)
               for a in ("advance", "rollback", "complete"))


def weights(live: LiveServer, experiment: str) -> dict[str, float]:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        samples = metric_samples(http)
    return {arm: total(samples, "resfam_rollout_weight", experiment=experiment, arm=arm) for arm in (BASELINE, TWIN)}


def test_a_challenger_that_answers_wrong_is_rolled_back(live):
    run = drive_rollout(live.url)
    rollout = run.rollout
    assert rollout["status"] == "rolled_back", rollout
    last = rollout["decisions"][-1]
    assert last["action"] == "rollback" and "accuracy challenger - baseline" in last["reason"]
    assert {status for _, status, *_ in run.answers} == {200}
    after = [arm for t, _, arm, _, _ in run.answers if t > last["decided_at"] + 2]
    assert after and set(after) == {BASELINE}
    assert stored_decisions(live, "rollout-rotated") == [(d["step"], d["action"]) for d in rollout["decisions"]]
    assert counted_decisions(live, "rollout-rotated") == len(rollout["decisions"])
    schemas.ABReport.model_validate(run.report)  # the OpenAPI document describes the rollout section
    with httpx.Client(base_url=live.url, timeout=30) as http:
        check_against_document(http.get("/openapi.json").json(), "get", "/ab/report", http.get("/ab/report"))


def test_a_challenger_as_good_as_the_baseline_reaches_all_traffic(live):
    live.reload({**live.config, "experiment": rollout_experiment("rollout-twin", TWIN)})
    run = drive_rollout(live.url)
    rollout = run.rollout
    assert rollout["status"] == "completed", rollout
    assert [d["action"] for d in rollout["decisions"]] == ["advance", "advance", "complete"]
    assert [d["weight"] for d in rollout["decisions"]] == [50, 100, 100]
    assert {status for _, status, *_ in run.answers} == {200}
    done = rollout["decisions"][-2]["decided_at"]  # at 100% from the second advance on
    after = [arm for t, _, arm, _, _ in run.answers if t > done + 2]
    assert after and set(after) == {TWIN}
    # two replicas decided every second: one stored row and one counted decision per step
    assert stored_decisions(live, "rollout-twin") == [(0, "advance"), (1, "advance"), (2, "complete")]
    assert counted_decisions(live, "rollout-twin") == 3
    assert weights(live, "rollout-twin") == {BASELINE: 0.0, TWIN: 100.0}
