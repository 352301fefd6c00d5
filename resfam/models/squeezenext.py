"""SqueezeNext (Gholami et al. 2018): residual blocks of a two-stage 1x1 squeeze, a separable 3x1 + 1x3
pair and a 1x1 expansion, all conv-BN-ReLU.

Names: squeezenext<depth>[v5][_<width>x], width 1.0 unless named (1_5x = 1.5, 2_0x = 2.0), so
squeezenext23 is the paper's 1.0-SqNxt-23 and squeezenext23v5_2_0x its 2.0-SqNxt-23v5. Blocks per stage:
23 = (6, 6, 8, 1) and 23v5 = (2, 4, 14, 1) as in the authors' Caffe models. The paper's deeper 34- and
44-layer variants have no per-stage table we could check offline; we spread their extra 11 and 21
blocks over stages 2 and 3, (6, 12, 13, 1) and (6, 18, 17, 1), which gives 2.0-SqNxt-44 the 4.4M
parameters the paper's abstract states. The depth in a name counts blocks plus the
first and last convolutions, not the five convs inside each block.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from resfam.layers import ConvBnAct, drop_path_rates, zero_init_branch_ends
from resfam.models.resnet import PostActBlock
from resfam.registry import register_model


class SqnxtBlock(PostActBlock):
    """The first 1x1 squeezes by 2 (stride 1), 4 (a wider input) or not at all (the stride-2 block)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        drop_path: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        reduction = 1 if stride == 2 else (4 if in_ch > out_ch else 2)
        mid = in_ch // reduction
        self.conv1 = ConvBnAct(in_ch, mid, 1, stride=stride)
        self.conv2 = ConvBnAct(mid, mid // 2, 1)
        self.conv3 = ConvBnAct(mid // 2, mid, (1, 3))
        self.conv4 = ConvBnAct(mid, mid, (3, 1))
        self.conv5 = ConvBnAct(mid, out_ch, 1)
        downsample = ConvBnAct(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else None
        self._finish(out_ch, downsample, attn_layer, attn_kwargs, drop_path)

    def branch_end(self) -> nn.BatchNorm2d:
        return self.conv5.bn

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x))))))


class SqueezeNext(nn.Module):
    def __init__(
        self,
        layers: Sequence[int] = (6, 6, 8, 1),
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        stem_ch = int(64 * width)
        self.stem = ConvBnAct(in_chans, stem_ch, 7, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        in_ch = stem_ch
        self.stages = nn.Sequential()
        for idx, (depth, base) in enumerate(zip(layers, (32, 64, 128, 256))):
            out_ch = int(base * width)
            blocks = []
            for b in range(depth):
                stride = 2 if idx > 0 and b == 0 else 1
                blocks.append(SqnxtBlock(in_ch, out_ch, stride, next(rates), attn_layer, attn_kwargs))
                in_ch = out_ch
            self.stages.add_module(str(idx), nn.Sequential(*blocks))
        self.final_conv = ConvBnAct(in_ch, int(128 * width), 1)
        self.num_features = int(128 * width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
        if zero_init_last:
            zero_init_branch_ends(self)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        stages = [(f"stage{i + 1}", s) for i, s in enumerate(self.stages)]
        return [("stem", self.stem), *stages, ("final_conv", self.final_conv)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_conv(self.stages(self.pool(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


DEPTHS = {"23": (6, 6, 8, 1), "23v5": (2, 4, 14, 1), "34": (6, 12, 13, 1), "44": (6, 18, 17, 1)}


def build_sqnxt(depth: str, width: float, kwargs: dict[str, Any]) -> SqueezeNext:
    return SqueezeNext(DEPTHS[depth], width, **kwargs)


# Reference top-1 from the paper where we could confirm it (1.0-SqNxt-23: 59.05).


@register_model("squeezenext", reference_top1=59.05)
def squeezenext23(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23", 1.0, kwargs)


@register_model("squeezenext")
def squeezenext23_1_5x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23", 1.5, kwargs)


@register_model("squeezenext")
def squeezenext23_2_0x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23", 2.0, kwargs)


@register_model("squeezenext")
def squeezenext34(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("34", 1.0, kwargs)


@register_model("squeezenext")
def squeezenext34_1_5x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("34", 1.5, kwargs)


@register_model("squeezenext")
def squeezenext34_2_0x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("34", 2.0, kwargs)


@register_model("squeezenext")
def squeezenext44(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("44", 1.0, kwargs)


@register_model("squeezenext")
def squeezenext44_1_5x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("44", 1.5, kwargs)


@register_model("squeezenext")
def squeezenext44_2_0x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("44", 2.0, kwargs)


@register_model("squeezenext")
def squeezenext23v5(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23v5", 1.0, kwargs)


@register_model("squeezenext")
def squeezenext23v5_1_5x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23v5", 1.5, kwargs)


@register_model("squeezenext")
def squeezenext23v5_2_0x(**kwargs: Any) -> SqueezeNext:
    return build_sqnxt("23v5", 2.0, kwargs)
