"""Pre-activation ResNet (He et al. 2016, "Identity Mappings"): BN-ReLU-conv branches and a clean
identity path, no ReLU after the addition. Module names follow timm's ResNetV2 (BatchNorm variant), so
timm's resnetv2_50 weights load. Wide ResNets (wide_resnet.py) are this class with wide basic blocks.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn

from resfam.layers import create_attn, drop_path_rates, make_drop_path, residual, zero_init_branch_ends
from resfam.models.data_configs import INCEPTION_MEAN, INCEPTION_STD, imagenet_config
from resfam.models.resnet import conv1x1, conv3x3
from resfam.registry import CIFAR, register_model


class PreActBlock(nn.Module):
    """Shared pre-activation wiring; subclasses define `branch` on the pre-activated input."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        drop_path: float,
        attn_layer: str | None,
        attn_kwargs: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(OrderedDict(conv=conv1x1(in_ch, out_ch, stride)))
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = make_drop_path(drop_path)
        self.se = create_attn(attn_layer, out_ch, **(attn_kwargs or {}))

    def branch(self, x_preact: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gate(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.se is None else self.se(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is None:
            return residual(x, lambda: self.branch(self.act(self.norm1(x))), self.drop_path)
        # A projection shortcut reads the pre-activated input, so the shared BN-ReLU runs even when dropped.
        x_preact = self.act(self.norm1(x))
        return residual(self.downsample(x_preact), lambda: self.branch(x_preact), self.drop_path)


class PreActBasic(PreActBlock):
    """Two 3x3 convs; drop_rate puts dropout between them (Wide ResNet)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        drop_path: float = 0.0,
        drop_rate: float = 0.0,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(in_ch, out_ch, stride, drop_path, attn_layer, attn_kwargs)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.norm2 = nn.BatchNorm2d(out_ch)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(out_ch, out_ch)

    def branch_end(self) -> nn.Conv2d:
        return self.conv2

    def branch(self, x_preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_preact)
        return self.gate(self.conv2(self.dropout(self.act(self.norm2(out)))))


class PreActBottleneck(PreActBlock):
    """1x1-3x3-1x1 with the stride on the 3x3 (as timm)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        drop_path: float = 0.0,
        bottle_ratio: float = 0.25,
        groups: int = 1,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(in_ch, out_ch, stride, drop_path, attn_layer, attn_kwargs)
        mid = int(out_ch * bottle_ratio)
        self.conv1 = conv1x1(in_ch, mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=groups)
        self.norm3 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, out_ch)

    def branch_end(self) -> nn.Conv2d:
        return self.conv3

    def branch(self, x_preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_preact)
        out = self.conv2(self.act(self.norm2(out)))
        return self.gate(self.conv3(self.act(self.norm3(out))))


V2_BLOCKS: dict[str, Callable[..., PreActBlock]] = {"basic": PreActBasic, "bottleneck": PreActBottleneck}


def make_v2_stem(stem: str, in_chans: int, stem_width: int) -> nn.Sequential:
    """7x7/2 conv and max-pool (ImageNet) or one 3x3 conv (CIFAR); no BN, the first block pre-activates."""
    if stem == "imagenet":
        conv = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        return nn.Sequential(OrderedDict(conv=conv, pool=nn.MaxPool2d(3, stride=2, padding=1)))
    if stem == "cifar":
        return nn.Sequential(OrderedDict(conv=conv3x3(in_chans, stem_width)))
    raise ValueError(f"unknown stem {stem!r}; known: imagenet, cifar")


class ResNetV2(nn.Module):
    """channels are each stage's output widths; block_kwargs reach every block (bottle_ratio, groups,
    drop_rate for dropout between a basic block's convs). zero_init_last starts every block as identity."""

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        channels: Sequence[int] = (256, 512, 1024, 2048),
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stem_width: int = 64,
        attn_layer: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        drop_path_rate: float = 0.0,
        block_kwargs: dict[str, Any] | None = None,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(channels):
            raise ValueError("layers and channels need one entry per stage")
        block_fn = V2_BLOCKS[block]
        self.num_classes = num_classes
        self.stem = make_v2_stem(stem, in_chans, stem_width)
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        in_ch = stem_width
        self.stages = nn.Sequential()
        for idx, (depth, out_ch) in enumerate(zip(layers, channels)):
            blocks = []
            for b in range(depth):
                stride = 2 if idx > 0 and b == 0 else 1
                blocks.append(
                    block_fn(
                        in_ch, out_ch, stride, next(rates),
                        attn_layer=attn_layer, attn_kwargs=attn_kwargs, **(block_kwargs or {}),
                    )
                )
                in_ch = out_ch
            self.stages.add_module(str(idx), nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks))))
        self.num_features = in_ch
        self.norm = nn.BatchNorm2d(in_ch)
        self.act = nn.ReLU(inplace=True)
        # timm's classifier is a 1x1 conv on the pooled features.
        self.head = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), fc=nn.Conv2d(in_ch, num_classes, 1), flatten=nn.Flatten(1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.head.fc:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            zero_init_branch_ends(self)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem.conv)] + [(f"stage{i + 1}", s) for i, s in enumerate(self.stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_resnetv2(block: str, layers: Sequence[int], kwargs: dict[str, Any], **defaults: Any) -> ResNetV2:
    return ResNetV2(block, layers, **{**defaults, **kwargs})


BASIC_CHANNELS = (64, 128, 256, 512)
CIFAR_PREACT = dict(channels=(64, 128, 256), stem="cifar", stem_width=16, num_classes=10)
TIMM_A1H = imagenet_config(crop_pct=0.95, interpolation="bicubic", mean=INCEPTION_MEAN, std=INCEPTION_STD)


@register_model("resnetv2", TIMM_A1H, {"timm": "resnetv2_50.a1h_in1k"})
def resnetv2_50(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (3, 4, 6, 3), kwargs)


@register_model("resnetv2", TIMM_A1H, {"timm": "resnetv2_101.a1h_in1k"})
def resnetv2_101(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (3, 4, 23, 3), kwargs)


@register_model("resnetv2", imagenet_config(interpolation="bicubic"))
def resnetv2_152(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (3, 8, 36, 3), kwargs)


@register_model("resnetv2")
def preact_resnet18(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("basic", (2, 2, 2, 2), kwargs, channels=BASIC_CHANNELS)


@register_model("resnetv2")
def preact_resnet34(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("basic", (3, 4, 6, 3), kwargs, channels=BASIC_CHANNELS)


@register_model("resnetv2")
def preact_resnet200(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (3, 24, 36, 3), kwargs)


# CIFAR pre-activation ResNets (paper sec. 4): 9n+2 layers of bottlenecks, outputs 64/128/256.


@register_model("resnetv2", data_config=CIFAR)
def preact_resnet164(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (18, 18, 18), kwargs, **CIFAR_PREACT)


@register_model("resnetv2", data_config=CIFAR)
def preact_resnet1001(**kwargs: Any) -> ResNetV2:
    return build_resnetv2("bottleneck", (111, 111, 111), kwargs, **CIFAR_PREACT)
