"""Stochastic depth (Huang et al. 2016) on every residual family: linear decay of survival, whole
branches skipped (not multiplied by zero) while training, identity at eval."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from resfam import create_model
from resfam.layers import DropPath, drop_path_rates
from tests.test_models_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# One cheap model per residual family (WRN and pre-activation share ResNetV2 but differ in blocks).
FAMILIES = ["resnet20", "seresnet20", "resnext20_4x8d", "wrn_16_4", "preact_resnet18", "resnest50d", "dpn68",
            "squeezenext23"]


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "branch")]


def count_branch_runs(model: nn.Module) -> dict[nn.Module, int]:
    """How often each block's branch ran, seen by a hook on the layer that ends it."""
    runs = {block: 0 for block in residual_blocks(model)}
    for block in runs:
        block.branch_end().register_forward_hook(lambda *_, b=block: runs.__setitem__(b, runs[b] + 1))
    return runs


def test_rates_decay_linearly_from_the_first_block_to_p_l():
    assert drop_path_rates(0.5, 5) == [0.0, 0.125, 0.25, 0.375, 0.5]
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_residual_family_takes_drop_path_rate(name):
    blocks = residual_blocks(create_model(name, drop_path_rate=0.5))
    probs = [b.drop_path.drop_prob if b.drop_path is not None else 0.0 for b in blocks]
    assert probs == pytest.approx(drop_path_rates(0.5, len(blocks)))


@pytest.mark.parametrize("name", FAMILIES)
def test_identity_at_eval(name):
    torch.manual_seed(0)
    dropping = create_model(name, drop_path_rate=0.5).eval()
    plain = create_model(name).eval()
    plain.load_state_dict(dropping.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dropping(x), plain(x))


@pytest.mark.parametrize("name", FAMILIES)
def test_dropped_branches_are_never_computed(name, monkeypatch):
    model = create_model(name, drop_path_rate=0.5).train()
    runs = count_branch_runs(model)
    monkeypatch.setattr(DropPath, "keep", lambda self: False)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for block, n in runs.items():
        assert n == (0 if block.drop_path is not None else 1)


def test_dropped_block_passes_its_shortcut():
    block = create_model("resnet20", drop_path_rate=0.5).layer3[1].train()  # an identity-shortcut block
    x = torch.randn(2, 64, 8, 8)
    block.drop_path.keep = lambda: False
    assert torch.equal(block(x), torch.relu(x))


def test_kept_branch_is_scaled_by_inverse_survival():
    drop = DropPath(0.25).train()
    x = torch.randn(4, 3)
    assert torch.allclose(drop(x), x / 0.75)
    assert torch.equal(drop.eval()(x), x) and drop.keep()


def test_share_of_branches_run_matches_expected_survival():
    """p_L = 0.5 with linear decay: on average 1 - 0.25 of the branches run, so 25% of the compute is saved."""
    torch.manual_seed(0)
    model = create_model("resnet110", drop_path_rate=0.5).train()
    runs = count_branch_runs(model)
    steps = 40
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(2, 3, 8, 8))
    share = sum(runs.values()) / (steps * len(runs))
    expected = 1 - sum(drop_path_rates(0.5, len(runs))) / len(runs)
    assert share == pytest.approx(expected, abs=0.04)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class TrainingSteps:
    """SGD steps of one model on one fixed CIFAR-sized batch."""

    def __init__(self, name: str, drop_path_rate: float, batch: int) -> None:
        torch.manual_seed(0)
        self.model = create_model(name, drop_path_rate=drop_path_rate).to(DEVICE).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.x = torch.randn(batch, 3, 32, 32, device=DEVICE)
        self.y = torch.randint(0, 10, (batch,), device=DEVICE)

    def seconds(self, steps: int) -> float:
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad()
            nn.functional.cross_entropy(self.model(self.x), self.y).backward()
            self.opt.step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started


@pytest.mark.bench
def test_training_is_faster_with_stochastic_depth():
    """resnet110 at p_L = 0 and 0.5, on a GPU if there is one: mean step time over three alternating rounds
    (a mean, not a best: which blocks are dropped varies from step to step)."""
    steps, batch = (50, 128) if DEVICE == "cuda" else (8, 64)
    runs = {p: TrainingSteps("resnet110", p, batch) for p in (0.0, 0.5)}
    for run in runs.values():
        run.seconds(5)  # warm-up: allocator, kernels, autotuning
    times: dict[float, list[float]] = {p: [] for p in runs}
    for _ in range(3):
        for p, run in runs.items():
            times[p].append(run.seconds(steps))
    per_step = {p: sum(t) / (len(t) * steps) for p, t in times.items()}
    print(f"\nresnet110 train step on {DEVICE}, batch {batch}: p_L=0 {per_step[0.0] * 1e3:.0f} ms, "
          f"p_L=0.5 {per_step[0.5] * 1e3:.0f} ms, speed-up {per_step[0.0] / per_step[0.5]:.2f}x")
    assert per_step[0.5] < per_step[0.0]
