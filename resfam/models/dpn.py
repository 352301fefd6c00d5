"""Dual Path Networks (Chen et al. 2017): each block adds to a residual path and appends to a dense path,
both carried in one tensor (first num_1x1_c channels residual, the rest dense). timm layout, so its
ports of the authors' MXNet weights load.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from resfam.layers import ConvBnAct, create_attn, drop_path_rates, make_drop_path, zero_init_branch_ends
from resfam.models.data_configs import DPN_MEAN, DPN_STD, imagenet_config
from resfam.registry import register_model

BN_EPS = 1e-3  # the MXNet models' BatchNorm epsilon


class BnAct(nn.Module):
    """BN then ReLU; the final one before pooling (conv5_bn_ac) is just this."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class BnActConv(BnAct):
    """Pre-activation unit: BN, ReLU, conv."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(super().forward(x))


class DualPathBlock(nn.Module):
    """kind: "proj" (first block, stride 1), "down" (first block of later stages, stride 2) or "normal"."""

    def __init__(
        self,
        in_ch: int,
        num_1x1_a: int,
        num_3x3_b: int,
        num_1x1_c: int,
        inc: int,
        groups: int,
        kind: str = "normal",
        drop_path: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.num_1x1_c, self.inc = num_1x1_c, inc
        stride = 2 if kind == "down" else 1
        # The projection's attribute name encodes its stride, as in the pretrained weights.
        self.c1x1_w_s1 = BnActConv(in_ch, num_1x1_c + 2 * inc, 1) if kind == "proj" else None
        self.c1x1_w_s2 = BnActConv(in_ch, num_1x1_c + 2 * inc, 1, stride=2) if kind == "down" else None
        self.c1x1_a = BnActConv(in_ch, num_1x1_a, 1)
        self.c3x3_b = BnActConv(num_1x1_a, num_3x3_b, 3, stride=stride, groups=groups)
        self.c1x1_c = BnActConv(num_3x3_b, num_1x1_c + inc, 1)
        self.se = create_attn(attn_layer, num_1x1_c + inc, **(attn_kwargs or {}))
        self.drop_path = make_drop_path(drop_path)

    def branch_end(self) -> nn.Conv2d:
        return self.c1x1_c.conv

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x)))
        return out if self.se is None else self.se(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.c1x1_w_s1 if self.c1x1_w_s1 is not None else self.c1x1_w_s2
        x_s = x if proj is None else proj(x)
        res, dense = x_s[:, : self.num_1x1_c], x_s[:, self.num_1x1_c :]
        if self.drop_path is not None and not self.drop_path.keep():
            # Dropped: the residual path passes through and the block appends zero-valued dense features.
            return torch.cat([res, dense, x_s.new_zeros((x_s.shape[0], self.inc, *x_s.shape[2:]))], dim=1)
        out = self.branch(x)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return torch.cat([res + out[:, : self.num_1x1_c], dense, out[:, self.num_1x1_c :]], dim=1)


class DPN(nn.Module):
    """k_sec: blocks per stage; inc_sec: dense growth per block; k_r: 3x3 width at stage 1; small: the
    DPN-68 form (3x3 stem, bottleneck widths x1 instead of x4)."""

    def __init__(
        self,
        k_sec: Sequence[int] = (3, 4, 20, 3),
        inc_sec: Sequence[int] = (16, 32, 24, 128),
        k_r: int = 96,
        groups: int = 32,
        num_init_features: int = 64,
        small: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        bw_factor = 1 if small else 4
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        blocks["conv1_1"] = ConvBnAct(in_chans, num_init_features, 3 if small else 7, stride=2, eps=BN_EPS)
        blocks["conv1_pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        self._stage_names = ["conv1_1"]
        rates = iter(drop_path_rates(drop_path_rate, sum(k_sec)))
        block_kwargs = dict(attn_layer=attn_layer, attn_kwargs=attn_kwargs)
        in_ch = num_init_features
        for i, (bw_base, depth, inc) in enumerate(zip((64, 128, 256, 512), k_sec, inc_sec)):
            bw, r = bw_base * bw_factor, k_r * bw_base // 64
            for j in range(1, depth + 1):
                kind = "normal" if j > 1 else ("proj" if i == 0 else "down")
                blocks[f"conv{i + 2}_{j}"] = DualPathBlock(in_ch, r, r, bw, inc, groups, kind, next(rates), **block_kwargs)
                in_ch = bw + 3 * inc if j == 1 else in_ch + inc
            self._stage_names.append(f"conv{i + 2}_{depth}")
        blocks["conv5_bn_ac"] = BnAct(in_ch)
        self.features = nn.Sequential(blocks)
        self.num_features = in_ch
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)  # a 1x1 conv, as in the pretrained weights
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.classifier:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            zero_init_branch_ends(self)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        return [("stem" if i == 0 else f"stage{i}", getattr(self.features, n)) for i, n in enumerate(self._stage_names)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.global_pool(self.features(x))), 1)


def build_dpn(kwargs: dict[str, Any], **defaults: Any) -> DPN:
    return DPN(**{**defaults, **kwargs})


DPN_DATA = imagenet_config(interpolation="bicubic", mean=DPN_MEAN, std=DPN_STD)


@register_model("dpn", DPN_DATA, {"timm": "dpn68.mx_in1k"})
def dpn68(**kwargs: Any) -> DPN:
    return build_dpn(
        kwargs, small=True, num_init_features=10, k_r=128, groups=32, k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64)
    )


@register_model("dpn", DPN_DATA, {"timm": "dpn92.mx_in1k"})
def dpn92(**kwargs: Any) -> DPN:
    return build_dpn(kwargs, num_init_features=64, k_r=96, groups=32, k_sec=(3, 4, 20, 3), inc_sec=(16, 32, 24, 128))


@register_model("dpn", DPN_DATA, {"timm": "dpn98.mx_in1k"})
def dpn98(**kwargs: Any) -> DPN:
    return build_dpn(kwargs, num_init_features=96, k_r=160, groups=40, k_sec=(3, 6, 20, 3), inc_sec=(16, 32, 32, 128))


@register_model("dpn", DPN_DATA, {"timm": "dpn107.mx_in1k"})
def dpn107(**kwargs: Any) -> DPN:
    return build_dpn(kwargs, num_init_features=128, k_r=200, groups=50, k_sec=(4, 8, 20, 3), inc_sec=(20, 64, 64, 128))


@register_model("dpn", DPN_DATA, {"timm": "dpn131.mx_in1k"})
def dpn131(**kwargs: Any) -> DPN:
    return build_dpn(kwargs, num_init_features=128, k_r=160, groups=40, k_sec=(4, 8, 28, 3), inc_sec=(16, 32, 32, 128))
