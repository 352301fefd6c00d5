"""ResNet (He et al. 2015): the configurable class every post-activation residual family builds on.

ResNeXt, SE-ResNet, Wide ResNet and ResNeSt register their variants in their own modules with this
class. Module names follow torchvision (timm for SE, deep stems and average-pool shortcuts), so upstream
checkpoints load with strict=True.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resfam.layers import create_attn, drop_path_rates, make_drop_path, residual, zero_init_branch_ends
from resfam.registry import CIFAR, register_model


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


class PostActBlock(nn.Module):
    """What post-activation blocks share: relu(branch(x) + shortcut(x)), an optional attention gate ending
    the branch, and stochastic depth that skips the branch. Subclasses build their layers, then `_finish`."""

    def _finish(
        self,
        out_ch: int,
        downsample: nn.Module | None,
        attn_layer: str | None,
        attn_kwargs: dict[str, Any] | None,
        drop_path: float,
    ) -> None:
        self.se = create_attn(attn_layer, out_ch, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = make_drop_path(drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gate(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.se is None else self.se(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        # Out-of-place ReLU: a dropped block hands back its shortcut, which may be its own input.
        return torch.relu(residual(shortcut, lambda: self.branch(x), self.drop_path))


class BasicBlock(PostActBlock):
    expansion = 1

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
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._finish(planes, downsample, attn_layer, attn_kwargs, drop_path)

    def branch_end(self) -> nn.BatchNorm2d:
        return self.bn2

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.gate(self.bn2(self.conv2(out)))


class Bottleneck(PostActBlock):
    """1x1-3x3-1x1 block. v1.5 strides in the 3x3; stride_in_1x1 gives the paper's v1."""

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
        self._finish(out_ch, downsample, attn_layer, attn_kwargs, drop_path)

    def branch_end(self) -> nn.BatchNorm2d:
        return self.bn3

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.gate(self.bn3(self.conv3(out)))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_stem(stem: str, in_chans: int, stem_width: int) -> tuple[nn.Module, int, nn.Module]:
    """(conv1, its output channels, pooling). "deep" is timm's three 3x3 convs ending at 2*stem_width."""
    if stem == "imagenet":
        conv = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        return conv, stem_width, nn.MaxPool2d(3, stride=2, padding=1)
    if stem == "cifar":
        return conv3x3(in_chans, stem_width), stem_width, nn.Identity()
    if stem == "deep":
        conv = nn.Sequential(
            conv3x3(in_chans, stem_width, 2),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            conv3x3(stem_width, stem_width),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            conv3x3(stem_width, 2 * stem_width),
        )
        return conv, 2 * stem_width, nn.MaxPool2d(3, stride=2, padding=1)
    raise ValueError(f"unknown stem {stem!r}; known: imagenet, cifar, deep")


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, avg_down: bool) -> nn.Module:
    """Option A pads zeros; option B projects with a 1x1 conv, after a 2x2 average pool if avg_down."""
    if kind == "A":
        return PadShortcut(out_ch, stride)
    if not avg_down:
        return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    return nn.Sequential(pool, conv1x1(in_ch, out_ch), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    """Residual network; the stem and stage widths select ImageNet (7x7 or deep stem) or CIFAR (3x3) form.

    shortcut: "B" projects with a 1x1 conv when shape changes (torchvision), "A" pads with zeros.
    block: "basic", "bottleneck" or a block class taking the same arguments (ResNeSt's);
    block_kwargs go to every block. drop_path_rate is p_L of stochastic depth.
    """

    def __init__(
        self,
        block: str | type[nn.Module],
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
        avg_down: bool = False,
        block_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(planes):
            raise ValueError("layers and planes need one entry per stage")
        if shortcut not in ("A", "B"):
            raise ValueError("shortcut must be 'A' (zero-pad) or 'B' (projection)")
        block_cls = BLOCKS[block] if isinstance(block, str) else block
        block_kwargs = dict(block_kwargs or {})
        if stride_in_1x1:
            if block_cls is BasicBlock:
                raise ValueError("stride_in_1x1 (ResNet v1) applies to bottleneck blocks only")
            block_kwargs["stride_in_1x1"] = True
        self.num_classes = num_classes
        self.conv1, inplanes, self.maxpool = make_stem(stem, in_chans, stem_width)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)

        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        self.stage_names: list[str] = []
        for idx, (n_blocks, stage_planes) in enumerate(zip(layers, planes)):
            stride = 1 if idx == 0 else 2
            out_ch = stage_planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                downsample = make_shortcut(shortcut, inplanes, out_ch, stride, avg_down)
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
                        **block_kwargs,
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
            zero_init_branch_ends(self)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        """Modules whose outputs are the stage outputs a summary reports (stem before pooling)."""
        return [("stem", self.bn1)] + [(name, getattr(self, name)) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def build_resnet(block: str | type[nn.Module], layers: Sequence[int], kwargs: dict[str, Any], **defaults: Any) -> ResNet:
    """A variant's defaults, overridden by what the caller passed to create_model."""
    return ResNet(block, layers, **{**defaults, **kwargs})


CIFAR_RESNET = dict(stem="cifar", stem_width=16, planes=(16, 32, 64), shortcut="A", num_classes=10)

# ImageNet ResNets, torchvision layout (v1.5). Reference top-1 from torchvision's IMAGENET1K_V1 weights.


@register_model("resnet", upstream={"torchvision": "resnet18", "timm": "resnet18.tv_in1k"}, reference_top1=69.758)
def resnet18(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (2, 2, 2, 2), kwargs)


@register_model("resnet", upstream={"torchvision": "resnet34", "timm": "resnet34.tv_in1k"}, reference_top1=73.314)
def resnet34(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (3, 4, 6, 3), kwargs)


@register_model("resnet", upstream={"torchvision": "resnet50", "timm": "resnet50.tv_in1k"}, reference_top1=76.130)
def resnet50(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 6, 3), kwargs)


@register_model("resnet", upstream={"torchvision": "resnet101", "timm": "resnet101.tv_in1k"}, reference_top1=77.374)
def resnet101(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs)


@register_model("resnet", upstream={"torchvision": "resnet152", "timm": "resnet152.tv_in1k"}, reference_top1=78.312)
def resnet152(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 8, 36, 3), kwargs)


# CIFAR ResNets (He et al. sec. 4.2): 6n+2 layers, 16/32/64 channels, option A shortcuts
# (pass shortcut="B" for 1x1 projections).


@register_model("resnet", data_config=CIFAR)
def resnet20(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (3, 3, 3), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet32(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (5, 5, 5), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet44(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (7, 7, 7), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet56(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (9, 9, 9), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet110(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (18, 18, 18), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet1202(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (200, 200, 200), kwargs, **CIFAR_RESNET)


@register_model("resnet", data_config=CIFAR)
def resnet18_cifar(**kwargs: Any) -> ResNet:
    """ResNet-18 widths with a 3x3 stride-1 stem and no max-pool, the usual ResNet-18 for 32x32 inputs."""
    return build_resnet("basic", (2, 2, 2, 2), kwargs, stem="cifar", num_classes=10)
