"""The rollout driver without Ray: two replicas' drivers on one store decide at once, exactly one decision per
step is stored and counted, and both routers take the same arms; 5xx answers reach the store."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from serve.ab.experiment import Arm
from serve.ab.rollout_driver import RolloutDriver
from serve.ab.rollout_store import RolloutStore
from serve.ab.router import ExperimentRouter
from serve.ab.store import FeedbackStore, Prediction
from serve.metrics import ServeMetrics, merge_snapshots

EXPERIMENT = {"name": "r", "arms": [{"model": "old", "weight": 50}, {"model": "new", "weight": 50}],
              "rollout": {"challenger": "new", "steps": [10, 100], "min_step_s": 10, "min_feedback": 5,
                          "accuracy_margin": 0.3, "decide_every_s": 0.01}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def replicas(tmp_path: Path):
    feedback = FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite'}", max_rows=10_000, retention_s=1e9)
    clock = Clock()
    drivers = []
    for _ in range(2):
        router = ExperimentRouter()
        router.reconfigure(EXPERIMENT, lambda name: None)
        drivers.append(RolloutDriver(router, RolloutStore(feedback), ServeMetrics(), clock))
    yield feedback, clock, drivers
    for d in drivers:
        d.close()
    feedback.close()


def serve(feedback: FeedbackStore, arm: str, n: int, at: float, correct: bool = True) -> None:
    for i in range(n):
        rid = f"{arm}-{at}-{i}"
        feedback.record([Prediction(rid, 0, arm, arm, 1, 0.9, 0.01 + i * 1e-4)], created=at + i * 0.01)
        feedback.add_feedback(rid, 0, 1 if correct else 2)


def test_two_replicas_conclude_each_step_once_and_route_alike(replicas):
    feedback, clock, drivers = replicas
    assert drivers[0].router.state.arms == (Arm("old", 90), Arm("new", 10))  # the first step, before any tick

    async def both() -> list:
        return await asyncio.gather(*(d.tick() for d in drivers))

    first = asyncio.run(both())
    assert [d.action for d in first] == ["hold", "hold"]  # no evidence yet: both hold, nothing concluded
    serve(feedback, "old", 100, clock.now + 1)
    serve(feedback, "new", 30, clock.now + 1)
    clock.now += 20
    # The interleaving this test is about: both replicas have read the evidence before either stores a
    # conclusion. (Left to the threads, the second one sometimes read the first one's conclusion and rightly held
    # at the next step instead.)
    both_read = threading.Barrier(len(drivers), timeout=10)
    for driver in drivers:
        evidence = driver.store.evidence
        driver.store.evidence = lambda *args, _read=evidence: (_read(*args), both_read.wait())[0]
    decided = [d for d in asyncio.run(both()) if d is not None]
    assert [d.action for d in decided] == ["advance"]  # one replica's insert won, the other read it back
    assert all(d.router.state.arms == (Arm("new", 100),) for d in drivers)
    assert [(s.step, s.action) for s in drivers[0].store.decisions("r")] == [(0, "advance")]
    merged = merge_snapshots([d.metrics.snapshot() for d in drivers]).decode()
    assert 'resfam_rollout_decisions_total{action="advance",experiment="r"} 1.0' in merged
    assert 'resfam_rollout_weight{arm="new",experiment="r"} 100.0' in merged  # the same on both: not summed
    report = drivers[1].report()
    assert (report["status"], report["step"], report["challenger_weight"]) == ("running", 1, 100)
    assert report["latest_hold"]["reason"].startswith("hold at 10%")


def test_a_reconfigure_keeps_the_weights_read_and_errors_are_stored(replicas):
    feedback, clock, drivers = replicas
    driver = drivers[0]
    asyncio.run(driver.tick())  # the rollout starts
    serve(feedback, "old", 100, clock.now + 1)
    serve(feedback, "new", 30, clock.now + 1, correct=False)  # always wrong: a clear breach
    clock.now += 20
    decision = asyncio.run(driver.tick())
    assert decision.action == "rollback" and driver.router.state.arms == (Arm("old", 100),)
    driver.router.reconfigure(EXPERIMENT, lambda name: None)
    driver.reapply()
    assert driver.router.state.arms == (Arm("old", 100),)  # not the first step's 10% again
    driver.note_error("new")
    asyncio.run(driver.tick())
    with feedback.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT arm FROM rollout_errors").scalars().all() == ["new"]
