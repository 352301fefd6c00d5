"""Stochastic depth (Huang et al. 2016): drop whole residual branches per sample while training."""
import torch
from torch import nn


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Linear decay of survival: block l of L drops with probability l/L * p_L (paper eq. 4)."""
    if num_blocks <= 1:
        return [drop_path_rate] * num_blocks
    return [drop_path_rate * (i + 1) / num_blocks for i in range(num_blocks)]
