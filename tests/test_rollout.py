"""The guarded rollout's decisions (serve.ab.rollout) and the simulation that drives it (serve.ab.rollout_sim)."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from serve.ab.experiment import assign
from serve.ab.rollout import (Accuracy, ArmEvidence, Decision, Evidence, RolloutState, arm_weights, decide,
                              p95_ranks, replay, windows)
from serve.ab.rollout_sim import decision_log, main, simulate
from serve.ab.sequential import quantile_interval
from serve.config import ExperimentConfig, RolloutConfig

ROLLOUT = {"challenger": "new", "steps": [5, 25, 50, 100], "min_step_s": 60, "min_feedback": 100,
           "max_error_rate": 0.01, "max_p95_latency_ratio": 1.5, "accuracy_margin": 0.02, "min_shadow_agreement": 0.8}
EXPERIMENT = ExperimentConfig.model_validate({"name": "r", "arms": [{"model": "old"}, {"model": "new"}],
                                              "rollout": ROLLOUT})
PLAN = EXPERIMENT.rollout
# Everything passes: challenger 1 point better on 5,000 labels, same latency, no errors, shadow agreeing.
GOOD = Evidence(baseline=ArmEvidence(10_000, 0, 5_000, 0.100, 0.095, 0.105),
                challenger=ArmEvidence(2_000, 0, 1_000, 0.100, 0.090, 0.110),
                accuracy=Accuracy(20_000, 16_000, 5_000, 4_050), shadow_compared=500, shadow_agreed=450)
LATER = 100.0  # seconds after the step started: past min_step_s


def experiment(**rollout) -> dict:
    return {"arms": [{"model": "old"}, {"model": "new"}], "rollout": {**ROLLOUT, **rollout}}


def at_step(step: int) -> RolloutState:
    return RolloutState(tuple(float(1000 * i) for i in range(step + 1)))


@pytest.mark.parametrize("config, message", [
    (experiment(steps=[25, 5, 100]), "steps must increase"),
    (experiment(steps=[5, 5, 100]), "steps must increase"),
    (experiment(steps=[0, 50]), "(0, 100]"),
    (experiment(steps=[50, 120]), "(0, 100]"),
    (experiment(steps=[100]), "first step must be below 100"),
    (experiment(steps=[]), "steps"),
    (experiment(challenger="other"), "rollout.challenger 'other' is not one of the arms"),
    ({**experiment(), "arms": [{"model": "old"}, {"model": "new"}, {"model": "third"}]}, "exactly two arms"),
    ({**experiment(), "mode": "shadow"}, "split mode"),
    (experiment(max_error_rate=1.5), "max_error_rate"),
    (experiment(unknown=1), "unknown"),
])
def test_config_refuses_bad_rollouts(config, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExperimentConfig.model_validate(config)


def test_config_accepts_a_rollout_and_keeps_experiments_without_one():
    assert PLAN.steps == [5, 25, 50, 100] and PLAN.alpha == 0.05
    assert ExperimentConfig.model_validate(experiment(steps=[10, 50])).rollout.steps == [10, 50]
    assert ExperimentConfig.model_validate({"arms": [{"model": "a"}, {"model": "b"}, {"model": "c"}]}).rollout is None


def test_holds_until_the_step_has_lasted_its_minimum():
    d = decide(PLAN, at_step(1), GOOD, now=1000 + 20)
    assert (d.action, d.step, d.weight, d.reason) == ("hold", 1, 25, "hold at 25%: 20 of 60 s")


def test_holds_until_the_challenger_has_its_feedback():
    short = replace(GOOD, challenger=replace(GOOD.challenger, feedback=37))
    d = decide(PLAN, at_step(1), short, now=1000 + LATER)
    assert (d.action, d.reason) == ("hold", "hold at 25%: 37 of 100 feedback labels on the challenger")


def test_holds_while_non_inferiority_is_not_shown():
    """Equal accuracy on few labels: the sequence still reaches below -margin, so no advance, and no rollback."""
    few = replace(GOOD, accuracy=Accuracy(400, 320, 200, 160))
    d = decide(PLAN, at_step(0), few, now=LATER)
    assert d.action == "hold" and "non-inferiority not shown yet" in d.reason
    lo, hi = (float(x) for x in d.reason.split("[")[1].split("]")[0].split(","))
    assert lo < -0.02 < 0 < hi


def test_advances_when_everything_passes_and_names_the_figures():
    d = decide(PLAN, at_step(0), GOOD, now=LATER)
    assert (d.action, d.step, d.weight) == ("advance", 0, 25)
    assert d.reason.startswith("advance from 5% to 25%: 1000 labels on the challenger, non-inferior (lower bound ")
    assert "> -0.02), p95 ratio 1.00 <= 1.5, errors 0.0%, shadow agreement 90.0%" in d.reason
    state = at_step(0).after(d)
    assert (state.step, state.step_started, state.status) == (1, LATER, "running")


def test_completes_after_the_last_step_holds():
    d = decide(PLAN, at_step(3), GOOD, now=3000 + LATER)
    assert (d.action, d.step, d.weight) == ("complete", 3, 100) and d.reason.startswith("complete at 100%: ")
    done = at_step(3).after(d)
    assert done.status == "completed" and [(a.name, a.weight) for a in arm_weights(EXPERIMENT, done)] == [("new", 100)]


# Each guardrail alone, read one second into the step: a clear breach needs no waiting for time or feedback.
BREACHES = {
    "accuracy": (replace(GOOD, accuracy=Accuracy(20_000, 16_000, 5_000, 3_500)),
                 r"rollback at 5%: accuracy challenger - baseline in \[-0\.1\d\d, -0\.0\d\d\], below -0.02 "
                 r"\(5000 and 20000 labels\)"),
    "latency": (replace(GOOD, challenger=replace(GOOD.challenger, p95_s=0.2, p95_low_s=0.180, p95_high_s=0.22)),
                r"rollback at 5%: challenger p95 latency at least 180 ms > 1.5 x baseline p95 at most 105 ms"),
    "errors": (replace(GOOD, challenger=replace(GOOD.challenger, errors=100)),
               r"rollback at 5%: challenger errors 100 of 2000 \(5.0%\), at least \d\.\d% > 1.0%"),
    "agreement": (replace(GOOD, shadow_agreed=300),
                  r"rollback at 5%: challenger agrees with baseline on 300 of 500 shadowed requests, "
                  r"at most \d\d\.\d% < 80.0%"),
}


@pytest.mark.parametrize("guardrail", sorted(BREACHES))
def test_rolls_back_at_the_first_clear_breach_of_each_guardrail(guardrail):
    evidence, reason = BREACHES[guardrail]
    d = decide(PLAN, at_step(0), evidence, now=1.0)
    assert (d.action, d.step, d.weight) == ("rollback", 0, 0)
    assert re.fullmatch(reason, d.reason), d.reason
    gone = at_step(0).after(d)
    assert gone.status == "rolled_back" and [a.name for a in arm_weights(EXPERIMENT, gone)] == ["old"]


@pytest.mark.parametrize("evidence, words", [
    (replace(GOOD, challenger=replace(GOOD.challenger, requests=150, errors=3)), "challenger errors 2.0% over 1.0%"),
    (replace(GOOD, challenger=replace(GOOD.challenger, p95_s=0.17, p95_low_s=0.12, p95_high_s=0.3)), "p95 ratio 1.70"),
    (replace(GOOD, shadow_compared=50, shadow_agreed=35), "shadow agreement 70.0% under 80.0%"),
])
def test_noise_over_a_limit_holds_without_rolling_back(evidence, words):
    """The observed figure is over its limit but its confidence bound is not: wait for more evidence."""
    d = decide(PLAN, at_step(0), evidence, now=LATER)
    assert d.action == "hold" and words in d.reason and "not yet a clear breach" in d.reason


def test_a_finished_rollout_takes_no_further_decisions():
    for action in ("rollback", "complete"):
        done = at_step(3).after(Decision(action, 3, 0, "", 3100.0))
        assert decide(PLAN, done, GOOD, now=4000.0) is None
        with pytest.raises(ValueError, match="takes no further decisions"):
            done.after(Decision("advance", 3, 100, "", 4000.0))


def test_decisions_are_keyed_by_the_step_they_conclude():
    """A replica holding a stale state cannot conclude a step twice; the stored rows rebuild the same state."""
    first = decide(PLAN, at_step(0), GOOD, now=LATER)
    state = RolloutState.start(0.0).after(first)
    with pytest.raises(ValueError, match="decision for step 0, but the rollout is at step 1"):
        state.after(decide(PLAN, at_step(0), GOOD, now=LATER + 5))
    second = decide(PLAN, state, GOOD, now=LATER + 100)
    hold = decide(PLAN, state.after(second), GOOD, now=LATER + 110)
    assert [d.concludes_step for d in (first, second, hold)] == [True, True, False]
    rebuilt = replay(0.0, [second, first])
    assert rebuilt == state.after(second) and rebuilt.step_starts == (0.0, LATER, LATER + 100)


def test_weights_move_users_only_to_the_challenger_and_none_after_rollback():
    users = [f"user-{i}" for i in range(2000)]
    placed = {}
    for step in range(4):
        arms = arm_weights(EXPERIMENT, at_step(step))
        assert [(a.name, a.weight) for a in arms] == ([("old", 100 - PLAN.steps[step]), ("new", PLAN.steps[step])]
                                                       if step < 3 else [("new", 100)])
        now = {u: assign(arms, u, salt="r").name for u in users}
        assert not [u for u in users if placed.get(u) == "new" and now[u] != "new"]
        share = sum(a == "new" for a in now.values()) / len(users)
        assert abs(share - PLAN.steps[step] / 100) < 0.04
        placed = now
    rolled_back = at_step(2).after(Decision("rollback", 2, 0, "", 2100.0))
    assert {assign(arm_weights(EXPERIMENT, rolled_back), u, salt="r").name for u in users} == {"old"}


def test_windows_take_the_baseline_from_the_previous_step_at_100_percent():
    w = windows(PLAN, at_step(2), now=2500.0)
    assert (w.challenger, w.baseline, w.accuracy) == ((2000.0, 2500.0), (2000.0, 2500.0), (0.0, 2500.0))
    assert windows(PLAN, at_step(3), now=3500.0).baseline == (2000.0, 3000.0)


@pytest.mark.parametrize("n", [0, 10, 71, 72, 400, 5000])
def test_p95_ranks_pick_the_order_statistics_of_the_interval(n):
    samples = np.random.default_rng(n).exponential(size=n)
    ranks = p95_ranks(n, 0.05)
    expected = tuple(None if r is None else float(np.sort(samples)[r - 1]) for r in ranks)
    assert expected == quantile_interval(samples, 0.95, 0.05)
    assert (ranks[1] is None) == (n < 72)


@pytest.mark.parametrize("challenger, status, guardrail", [
    ("good", "completed", "complete at 100%"),
    ("worse", "rolled_back", "accuracy challenger - baseline"),
    ("slow", "rolled_back", "p95 latency"),
    ("flaky", "rolled_back", "challenger errors"),
])
def test_simulated_rollouts_end_as_they_should(challenger, status, guardrail):
    run = simulate(challenger, seed=1)
    assert run.state.status == status
    assert guardrail in run.decisions[-1].reason
    advanced = [d.weight for d in run.decisions if d.action == "advance"]
    assert advanced == [25, 50, 100][:len(advanced)]
    assert run.decisions[-1].weight == (100 if status == "completed" else 0)
    assert run.decisions[-1].reason in decision_log(run)[-1]


def test_the_simulation_cli_prints_the_log_and_draws_the_timeline(tmp_path, capsys):
    assert main(["--challenger", "slow", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rollback" in out and (tmp_path / "rollout_slow.png").stat().st_size > 10_000


@pytest.mark.parametrize("make", [
    lambda: ArmEvidence(requests=5, errors=6),
    lambda: ArmEvidence(feedback=-1),
    lambda: Accuracy(10, 11, 0, 0),
    lambda: Accuracy(0, 0, 5, -1),
    lambda: replace(GOOD, shadow_agreed=501),
])
def test_impossible_evidence_is_refused(make):
    with pytest.raises(ValueError, match="need 0 <="):
        make()
