"""Conv-BN-ReLU as one named module (children `conv`, `bn`, `act`), the unit most small networks repeat."""
from __future__ import annotations

from torch import nn


class ConvBnAct(nn.Sequential):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        groups: int = 1,
        padding: int | tuple[int, int] | None = None,
        eps: float = 1e-5,
    ) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        pad = (ks[0] // 2, ks[1] // 2) if padding is None else padding
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, stride=stride, padding=pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps)
        self.act = nn.ReLU(inplace=True)
