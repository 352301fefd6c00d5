"""Stochastic depth (Huang et al. 2016): residual branches are dropped for a whole mini-batch.

A dropped branch is never computed, so training really gets faster (the paper's point), instead of
computing the branch and multiplying it by zero. At eval every branch runs unscaled.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class DropPath(nn.Module):
    """Decides, once per mini-batch, whether a block's residual branch runs."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def keep(self) -> bool:
        """Sample whether the branch runs; always True at eval."""
        if not self.training or self.drop_prob == 0.0:
            return True
        return bool(torch.rand(()) >= self.drop_prob)

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        """Scale a kept branch by 1/survival while training, so eval needs no rescaling."""
        if not self.training or self.drop_prob == 0.0:
            return branch
        return branch / (1.0 - self.drop_prob)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def residual(shortcut: torch.Tensor, branch: Callable[[], torch.Tensor], drop_path: DropPath | None) -> torch.Tensor:
    """shortcut + branch(); when stochastic depth drops the block, branch() is not even called."""
    if drop_path is None:
        return branch() + shortcut
    if not drop_path.keep():
        return shortcut
    return drop_path(branch()) + shortcut


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Linear decay of survival: 1 at the first block down to 1 - p_L at the last (paper eq. 4)."""
    if num_blocks <= 1:
        return [drop_path_rate] * num_blocks
    return [drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def make_drop_path(drop_prob: float) -> DropPath | None:
    """None when the block is never dropped, so a model without stochastic depth carries no module."""
    return DropPath(drop_prob) if drop_prob > 0 else None
