"""ResNet (He et al. 2015) and its residual descendants: SE-ResNet, ResNeXt, SE-ResNeXt, CIFAR ResNets.

One configurable class; each variant is a registered function with a small kwargs dict.
Module names follow torchvision (and timm for SE) so upstream checkpoints load with strict=True.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resfam.layers import DropPath, create_attn, drop_path_rates
from resfam.registry import CIFAR, IMAGENET, register_model


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut (paper sec. 4.2): subsample and zero-pad channels, no parameters."""

    def __init__(self, out_ch: int, stride: int) -> None:
        super().__init__()
        self.out_ch, self.stride = out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_ch - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class BasicBlock(nn.Module):
    expansion = 1
    convs = 2

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
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = create_attn(attn_layer, planes, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 block. v1.5 strides in the 3x3; stride_in_1x1 gives the paper's v1."""

    expansion = 4
    convs = 3

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
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.se = create_attn(attn_layer, out_ch, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Residual network; the stem and stage widths select ImageNet (7x7 stem) or CIFAR (3x3 stem) form.

    shortcut: "B" projects with a 1x1 conv when shape changes (torchvision), "A" pads with zeros.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stem_width: int = 64,
        planes: Sequence[int] = (64, 128, 256, 512),
        cardinality: int = 1,
        base_width: int = 64,
        shortcut: str = "B",
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        drop_path_rate: float = 0.0,
        stride_in_1x1: bool = False,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(planes):
            raise ValueError("layers and planes need one entry per stage")
        if shortcut not in ("A", "B"):
            raise ValueError("shortcut must be 'A' (zero-pad) or 'B' (projection)")
        block_cls = BLOCKS[block]
        self.num_classes = num_classes
        self.conv1 = (
            nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
            if stem == "imagenet"
            else conv3x3(in_chans, stem_width)
        )
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        inplanes = stem_width
        self.stage_names: list[str] = []
        for idx, (n_blocks, stage_planes) in enumerate(zip(layers, planes)):
            stride = 1 if idx == 0 else 2
            out_ch = stage_planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                downsample = (
                    PadShortcut(out_ch, stride)
                    if shortcut == "A"
                    else nn.Sequential(conv1x1(inplanes, out_ch, stride), nn.BatchNorm2d(out_ch))
                )
            blocks = []
            for b in range(n_blocks):
                blocks.append(
                    block_cls(
                        inplanes,
                        stage_planes,
                        stride if b == 0 else 1,
                        downsample if b == 0 else None,
                        cardinality=cardinality,
                        base_width=base_width,
                        attn_layer=attn_layer,
                        attn_kwargs=attn_kwargs,
                        drop_path=next(rates),
                        stride_in_1x1=stride_in_1x1,
                    )
                )
                inplanes = out_ch
            name = f"layer{idx + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _build(block: str, layers: Sequence[int], kwargs: dict[str, Any], **defaults: Any) -> ResNet:
    return ResNet(block, layers, **{**defaults, **kwargs})


_CIFAR_RESNET = dict(stem="cifar", stem_width=16, planes=(16, 32, 64), shortcut="A", num_classes=10)
_SE = dict(attn_layer="se")

# ImageNet ResNets, torchvision layout (v1.5). Reference top-1 from torchvision's IMAGENET1K_V1 weights.


@register_model("resnet", upstream={"torchvision": "resnet18", "timm": "resnet18.tv_in1k"}, reference_top1=69.758)
def resnet18(**kwargs: Any) -> ResNet:
    return _build("basic", (2, 2, 2, 2), kwargs)


@register_model("resnet", upstream={"torchvision": "resnet50", "timm": "resnet50.tv_in1k"}, reference_top1=76.130)
def resnet50(**kwargs: Any) -> ResNet:
    return _build("bottleneck", (3, 4, 6, 3), kwargs)


@register_model("resnext", upstream={"torchvision": "resnext50_32x4d"}, reference_top1=77.618)
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    return _build("bottleneck", (3, 4, 6, 3), kwargs, cardinality=32, base_width=4)


@register_model("seresnet", upstream={"timm": "seresnet50.a1_in1k"}, reference_top1=80.1)
def seresnet50(**kwargs: Any) -> ResNet:
    return _build("bottleneck", (3, 4, 6, 3), kwargs, **_SE)


# CIFAR-style networks (32x32 input, 3x3 stem).


@register_model("resnet", data_config=CIFAR)
def resnet20(**kwargs: Any) -> ResNet:
    return _build("basic", (3, 3, 3), kwargs, **_CIFAR_RESNET)


@register_model("seresnet", data_config=CIFAR)
def seresnet20(**kwargs: Any) -> ResNet:
    return _build("basic", (3, 3, 3), kwargs, **_CIFAR_RESNET, **_SE)


@register_model("resnext", data_config=CIFAR)
def resnext20_4x8d(**kwargs: Any) -> ResNet:
    """Small CIFAR ResNeXt: 3 stages x 2 bottlenecks, cardinality 4, 8 channels per group at stage 1."""
    return _build("bottleneck", (2, 2, 2), kwargs, stem="cifar", stem_width=16, planes=(16, 32, 64),
                  cardinality=4, base_width=32, num_classes=10)
