"""A/B assignment by weighted rendezvous hashing: sticky, fair to the weights, minimal moves."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from serve.ab.experiment import Arm, assign, random_arm, sticky_arm

USERS = [f"user-{i}" for i in range(2000)]
HALF = [Arm("seresnet20_digits", 50), Arm("resnext20_digits", 50)]


def shares(arms: list[Arm], users: list[str]) -> dict[str, float]:
    counts = Counter(sticky_arm(arms, u).name for u in users)
    return {a.name: counts[a.name] / len(users) for a in arms}


def test_the_same_user_always_lands_in_the_same_arm():
    first = [sticky_arm(HALF, u).name for u in USERS]
    again = [assign(list(reversed(HALF)), u).name for u in USERS]  # arm order does not matter either
    assert first == again


def test_2000_users_at_50_50_land_within_45_to_55_percent():
    for share in shares(HALF, USERS).values():
        assert 0.45 <= share <= 0.55


@pytest.mark.parametrize("weights", [(90, 10), (1, 1, 2), (70, 20, 10)])
def test_shares_follow_the_weights(weights):
    arms = [Arm(f"arm{i}", w) for i, w in enumerate(weights)]
    users = [f"u{i}" for i in range(20000)]
    for arm, share in shares(arms, users).items():
        expected = dict((a.name, a.weight) for a in arms)[arm] / sum(weights)
        assert share == pytest.approx(expected, abs=0.015)


def test_reweighting_50_50_to_60_40_moves_about_ten_percent_and_only_to_the_grown_arm():
    before = {u: sticky_arm(HALF, u).name for u in USERS}
    after = {u: sticky_arm([Arm("seresnet20_digits", 60), Arm("resnext20_digits", 40)], u).name for u in USERS}
    moved = [u for u in USERS if before[u] != after[u]]
    assert 0.07 <= len(moved) / len(USERS) <= 0.12
    assert all(after[u] == "seresnet20_digits" for u in moved)


def test_removing_an_arm_moves_only_its_users():
    three = [Arm("a", 1), Arm("b", 1), Arm("c", 1)]
    before = {u: sticky_arm(three, u).name for u in USERS}
    after = {u: sticky_arm(three[:2], u).name for u in USERS}
    assert all(before[u] == after[u] for u in USERS if before[u] != "c")


def test_the_salt_reshuffles_users_between_experiments():
    same = sum(sticky_arm(HALF, u).name == sticky_arm(HALF, u, salt="exp2").name for u in USERS)
    assert 0.4 <= same / len(USERS) <= 0.6


def test_users_without_an_id_are_assigned_at_random_by_weight():
    rng = random.Random(0)
    arms = [Arm("a", 3), Arm("b", 1)]
    counts = Counter(assign(arms, None, rng=rng).name for _ in range(8000))
    assert counts["a"] / 8000 == pytest.approx(0.75, abs=0.02)
    assert random_arm(arms, random.Random(1)).name in {"a", "b"}
