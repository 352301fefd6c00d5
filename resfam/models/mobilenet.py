"""MobileNet v1 (Howard et al. 2017): a 3x3 conv then 13 depthwise-separable blocks.

Width multiplier alpha thins every layer (width_multiplier=...); resolution multiplier rho only changes
the input the network is fed, so the rho variants differ from mobilenet_v1 in their data config alone.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfam.layers import ConvBnAct
from resfam.models.data_configs import imagenet_config
from resfam.registry import DataConfig, register_model

# (output channels, stride) of the 13 depthwise-separable blocks, paper Table 1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBnAct(in_ch, in_ch, 3, stride=stride, groups=in_ch)
        self.pw = ConvBnAct(in_ch, out_ch, 1)


class MobileNetV1(nn.Module):
    def __init__(
        self, width_multiplier: float = 1.0, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        ch = int(32 * width_multiplier)
        self.stem = ConvBnAct(in_chans, ch, 3, stride=2)
        blocks = []
        for out, stride in BLOCKS:
            blocks.append(DepthwiseSeparable(ch, int(out * width_multiplier), stride))
            ch = int(out * width_multiplier)
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        """The stem, then the last block at each resolution."""
        ends = [i - 1 for i, (_, stride) in enumerate(BLOCKS) if stride == 2] + [len(BLOCKS) - 1]
        return [("stem", self.stem)] + [(f"block{i + 1}", self.blocks[i]) for i in ends]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def build_mobilenet_v1(width: float, kwargs: dict[str, Any]) -> MobileNetV1:
    return MobileNetV1(**{"width_multiplier": width, **kwargs})


def rho_config(size: int) -> DataConfig:
    """Resolution multiplier rho = size / 224."""
    return imagenet_config(size)


# Reference top-1 from the paper (Table 6 for alpha, Table 7 for rho).


@register_model("mobilenet", reference_top1=70.6)
def mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(1.0, kwargs)


@register_model("mobilenet", reference_top1=68.4)
def mobilenet_v1_075(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(0.75, kwargs)


@register_model("mobilenet", reference_top1=63.7)
def mobilenet_v1_050(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(0.5, kwargs)


@register_model("mobilenet", reference_top1=50.6)
def mobilenet_v1_025(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(0.25, kwargs)


@register_model("mobilenet", rho_config(192), reference_top1=69.1)
def mobilenet_v1_192(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(1.0, kwargs)


@register_model("mobilenet", rho_config(160), reference_top1=67.2)
def mobilenet_v1_160(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(1.0, kwargs)


@register_model("mobilenet", rho_config(128), reference_top1=64.4)
def mobilenet_v1_128(**kwargs: Any) -> MobileNetV1:
    return build_mobilenet_v1(1.0, kwargs)
