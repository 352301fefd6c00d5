"""Channel attention plugged into blocks by name, so any residual family can take it."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from resfam.layers.helpers import make_divisible


class SqueezeExcite(nn.Module):
    """SE block (Hu et al. 2018); module names follow timm's SEModule so its weights load."""

    def __init__(self, channels: int, reduction: int = 16, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels / reduction, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


_ATTENTION: dict[str, Callable[..., nn.Module]] = {"se": SqueezeExcite}


def create_attn(name: str | None, channels: int, **kwargs) -> nn.Module | None:
    if not name:
        return None
    try:
        return _ATTENTION[name](channels, **kwargs)
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; known: {sorted(_ATTENTION)}") from None
