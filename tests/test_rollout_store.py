"""The rollout's shared state (serve.ab.rollout_store) on SQLite and a real PostgreSQL: started once, one
decision per step whoever decides, the latest hold, and the evidence counted by the database."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serve.ab.rollout import Decision, RolloutState, p95_ranks
from serve.ab.rollout_store import RolloutStore
from serve.ab.store import FeedbackStore, Prediction
from serve.config import ExperimentConfig
from tests.postgres import postgres_database, postgres_server  # noqa: F401 (fixtures)

EXPERIMENT = ExperimentConfig.model_validate({
    "name": "r1", "arms": [{"model": "old"}, {"model": "new"}],
    "rollout": {"challenger": "new", "steps": [10, 50, 100], "alpha": 0.05}})


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_database")
        request.getfixturevalue("postgres_server").empty(url.rsplit("/", 1)[1])
    feedback = FeedbackStore(url, max_rows=100_000, retention_s=1e9)
    yield feedback, RolloutStore(feedback)
    feedback.close()


def test_started_once_whoever_asks(stores):
    _, store = stores
    assert store.start("r1", 100.0) == 100.0
    assert store.start("r1", 200.0) == 100.0
    assert store.state("r1", 300.0) == RolloutState((100.0,))
    assert store.start("other", 250.0) == 250.0


def test_one_decision_per_step_among_racing_replicas(stores):
    _, store = stores
    store.start("r1", 0.0)
    racers = [Decision("advance", 0, 50.0, f"replica {i}", 10.0 + i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda d: store.conclude("r1", d), racers))
    assert sum(won) == 1
    (stored,) = store.decisions("r1")
    assert stored == racers[won.index(True)]
    state = store.state("r1", 99.0)
    assert (state.step, state.step_starts, state.status) == (1, (0.0, stored.at), "running")
    assert store.conclude("r1", Decision("rollback", 1, 0.0, "breach", 30.0))
    assert not store.conclude("r1", Decision("complete", 1, 50.0, "late", 31.0))
    assert store.state("r1", 99.0).status == "rolled_back"
    with pytest.raises(ValueError, match="holds go to hold"):
        store.conclude("r1", Decision("hold", 1, 50.0, "wait", 32.0))


def test_only_the_latest_hold_is_kept(stores):
    _, store = stores
    store.start("r1", 0.0)
    assert store.latest_hold("r1") is None
    store.hold("r1", Decision("hold", 0, 10.0, "hold at 10%: 3 of 60 s", 3.0))
    store.hold("r1", Decision("hold", 0, 10.0, "hold at 10%: 9 of 60 s", 9.0))
    hold = store.latest_hold("r1")
    assert (hold.step, hold.reason, hold.at) == (0, "hold at 10%: 9 of 60 s", 9.0)


def test_evidence_counts_each_window_in_sql(stores):
    feedback, store = stores
    rng = random.Random(3)
    latencies = {"old": [], "new": []}
    expected = {"old": [0, 0], "new": [0, 0]}  # labels, correct since the start (t >= 100)
    for i in range(400):
        arm = "new" if i % 4 == 0 else "old"
        t = 50.0 + i  # 50 .. 449: the first 50 before the rollout started
        latency = rng.lognormvariate(-3, 0.4)
        predicted = rng.randrange(3)
        feedback.record([Prediction(f"r{i}", 0, arm, arm, predicted, 0.9, latency)], created=t)
        if i % 2 == 0:
            feedback.add_feedback(f"r{i}", 0, label := rng.randrange(3))
            if t >= 100:
                expected[arm][0] += 1
                expected[arm][1] += label == predicted
        if 300 <= t < 450:
            latencies[arm].append(latency)
    store.record_errors("r1", [("new", 310.0), ("new", 320.0), ("old", 330.0), ("new", 500.0)])
    store.record_errors("other", [("new", 320.0)])
    state = RolloutState((100.0, 300.0))  # step 1 (50%) began at 300
    evidence = store.evidence(EXPERIMENT, state, now=450.0)
    assert (evidence.accuracy.baseline_feedback, evidence.accuracy.baseline_correct) == tuple(expected["old"])
    assert (evidence.accuracy.challenger_feedback, evidence.accuracy.challenger_correct) == tuple(expected["new"])
    for arm, got, errors in (("old", evidence.baseline, 1), ("new", evidence.challenger, 2)):
        ordered = sorted(latencies[arm])
        n = len(ordered)
        assert (got.requests, got.errors) == (n + errors, errors)
        assert got.feedback == sum(1 for i in range(250, 400) if i % 2 == 0 and (arm == "new") == (i % 4 == 0))
        assert got.p95_s == ordered[int(np.ceil(0.95 * n)) - 1]
        low, high = p95_ranks(n, 0.05)
        assert got.p95_low_s == ordered[low - 1]
        assert got.p95_high_s == (None if high is None else ordered[high - 1])
    # At the 100% step the baseline's window is its previous step.
    final = store.evidence(EXPERIMENT, RolloutState((100.0, 200.0, 300.0)), now=450.0)
    assert final.baseline.requests == sum(1 for i in range(150, 250) if i % 4) + 0
