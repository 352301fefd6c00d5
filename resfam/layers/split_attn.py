"""Split attention (Zhang et al. 2020, ResNeSt): a grouped conv split into `radix` branches, mixed by
a softmax over the branches computed from their pooled sum. Module names follow timm's SplitAttn."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resfam.layers.helpers import make_divisible


class SplitAttn(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        groups: int = 1,
        radix: int = 2,
        rd_ratio: float = 0.25,
        rd_divisor: int = 8,
    ) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError("radix must be >= 1")
        self.radix, self.groups = radix, groups
        mid_ch = out_ch * radix
        attn_ch = make_divisible(in_ch * radix * rd_ratio, rd_divisor, min_value=32)
        self.conv = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=1, groups=groups * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(mid_ch)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_ch, attn_ch, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn_ch)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_ch, mid_ch, 1, groups=groups)

    def _branch_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax across the radix branches of each group (sigmoid gate when radix is 1)."""
        batch = logits.shape[0]
        if self.radix == 1:
            return logits.sigmoid()
        logits = logits.view(batch, self.groups, self.radix, -1).transpose(1, 2)
        return F.softmax(logits, dim=1).reshape(batch, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv(x)))
        batch, mid_ch, height, width = x.shape
        if self.radix > 1:
            x = x.reshape(batch, self.radix, mid_ch // self.radix, height, width)
            pooled = x.sum(dim=1)
        else:
            pooled = x
        gap = self.act1(self.bn1(self.fc1(pooled.mean((2, 3), keepdim=True))))
        attn = self._branch_weights(self.fc2(gap)).view(batch, -1, 1, 1)
        if self.radix == 1:
            return x * attn
        return (x * attn.reshape(batch, self.radix, mid_ch // self.radix, 1, 1)).sum(dim=1)
