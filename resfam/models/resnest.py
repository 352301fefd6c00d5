"""ResNeSt (Zhang et al. 2020): ResNet-D (deep stem, average-pool shortcuts) whose bottleneck 3x3 is
split attention over `radix` branches; avd moves the stride into a 3x3 average pool. timm layout."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfam.layers import SplitAttn
from resfam.models.data_configs import imagenet_config
from resfam.models.resnet import PostActBlock, ResNet, build_resnet, conv1x1
from resfam.registry import register_model


class ResNestBottleneck(PostActBlock):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        drop_path: float = 0.0,
        radix: int = 2,
        avd: bool = True,
        avd_first: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        out_ch = planes * self.expansion
        avd_stride = stride if avd and stride > 1 else 0
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.avd_first = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and avd_first else None
        self.conv2 = SplitAttn(width, width, 1 if avd_stride else stride, groups=cardinality, radix=radix)
        self.avd_last = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and not avd_first else None
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self._finish(out_ch, downsample, attn_layer, attn_kwargs, drop_path)

    def branch_end(self) -> nn.BatchNorm2d:
        return self.bn3

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.conv2(out)
        if self.avd_last is not None:
            out = self.avd_last(out)
        return self.gate(self.bn3(self.conv3(out)))


def build_resnest(layers: tuple[int, ...], stem_width: int, kwargs: dict[str, Any]) -> ResNet:
    """radix, avd and avd_first may be passed directly; they travel to every block."""
    block_kwargs = {"radix": 2, "avd": True, "avd_first": False}
    block_kwargs.update({k: kwargs.pop(k) for k in list(block_kwargs) if k in kwargs})
    return build_resnet(
        ResNestBottleneck, layers, kwargs, stem="deep", stem_width=stem_width, avg_down=True,
        block_kwargs=block_kwargs,
    )


# Reference top-1 from the ResNeSt paper at each model's own crop size.


@register_model("resnest", upstream={"timm": "resnest50d.in1k"}, reference_top1=81.13)
def resnest50d(**kwargs: Any) -> ResNet:
    return build_resnest((3, 4, 6, 3), 32, kwargs)


@register_model("resnest", imagenet_config(256), {"timm": "resnest101e.in1k"}, 82.83)
def resnest101e(**kwargs: Any) -> ResNet:
    return build_resnest((3, 4, 23, 3), 64, kwargs)


@register_model("resnest", imagenet_config(320, 0.909, "bicubic"), {"timm": "resnest200e.in1k"}, 83.84)
def resnest200e(**kwargs: Any) -> ResNet:
    return build_resnest((3, 24, 36, 3), 64, kwargs)


@register_model("resnest", imagenet_config(416, 0.928, "bicubic"), {"timm": "resnest269e.in1k"}, 84.54)
def resnest269e(**kwargs: Any) -> ResNet:
    return build_resnest((3, 30, 48, 8), 64, kwargs)
