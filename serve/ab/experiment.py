"""A/B assignment: which arm answers a request.

Sticky users are placed by weighted rendezvous hashing (Schindelhauer and Schomaker, 2005): each arm
scores a user with -ln(u) / weight, u a hash of (experiment, user, arm) in (0, 1), and the lowest
score wins. An arm wins with probability weight / sum(weights), and when one arm's weight grows,
users only move *to* that arm (the share it gains, nothing more); removing an arm moves only its
own users. Requests without a user id are assigned at random by weight.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence

_SCALE = float(2 ** 64)


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float


def unit_hash(*parts: str) -> float:
    """A stable pseudo-random point in (0, 1) for the parts (same on every replica and restart)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def sticky_arm(arms: Sequence[Arm], user: str, salt: str = "") -> Arm:
    """The arm `user` always lands in while the arms and weights stay the same."""
    return min(arms, key=lambda arm: -math.log(unit_hash(salt, user, arm.name)) / arm.weight)


def random_arm(arms: Sequence[Arm], rng: random.Random | None = None) -> Arm:
    return (rng or random).choices(list(arms), weights=[a.weight for a in arms])[0]


def assign(arms: Sequence[Arm], user: str | None, salt: str = "", rng: random.Random | None = None) -> Arm:
    return sticky_arm(arms, user, salt) if user else random_arm(arms, rng)
