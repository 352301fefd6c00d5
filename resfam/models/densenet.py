"""DenseNet (Huang et al. 2017): every layer sees the concatenation of all earlier ones in its block.

DenseNet-BC: bottleneck (1x1 to bn_size*k before the 3x3) and compression theta of the transitions.
memory_efficient recomputes the concatenation, BN and ReLU feeding each bottleneck during backward
(torch.utils.checkpoint), so they are not stored: same outputs and gradients, lower peak memory.
Module names follow torchvision so its weights load.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from resfam.registry import CIFAR, register_model


@contextmanager
def _frozen_running_stats(norm: nn.BatchNorm2d) -> Iterator[None]:
    """During recomputation BN normalises with batch statistics as before but must not update its
    running statistics a second time: momentum 0 keeps them, and the batch counter is parked."""
    momentum, counter = norm.momentum, norm.num_batches_tracked
    norm.momentum, norm.num_batches_tracked = 0.0, None
    try:
        yield
    finally:
        norm.momentum, norm.num_batches_tracked = momentum, counter


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck, optional) then BN-ReLU-conv3x3 producing growth_rate channels."""

    def __init__(self, in_ch: int, growth_rate: int, bn_size: int, drop_rate: float, memory_efficient: bool) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.bottleneck = bn_size > 0
        if self.bottleneck:
            self.conv1 = nn.Conv2d(in_ch, bn_size * growth_rate, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_ch, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _first(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            out = checkpoint(
                self._first, *features, use_reentrant=False,
                context_fn=lambda: (nullcontext(), _frozen_running_stats(self.norm1)),
            )
        else:
            out = self._first(*features)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else out


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_ch: int, growth_rate: int, **layer_kwargs: Any) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_ch + i * growth_rate, growth_rate, **layer_kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


def _stem(stem: str, in_chans: int, width: int) -> list[tuple[str, nn.Module]]:
    """ImageNet: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool. CIFAR: one 3x3 conv (the first layer brings BN)."""
    if stem == "imagenet":
        return [
            ("conv0", nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(width)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]
    if stem == "cifar":
        return [("conv0", nn.Conv2d(in_chans, width, 3, padding=1, bias=False))]
    raise ValueError(f"unknown stem {stem!r}; known: imagenet, cifar")


class DenseNet(nn.Module):
    """bn_size 0 drops the bottleneck; compression is theta (1.0 for plain DenseNet)."""

    def __init__(
        self,
        block_config: Sequence[int],
        growth_rate: int = 32,
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError("compression must be in (0, 1]")
        self.num_classes = num_classes
        modules = _stem(stem, in_chans, num_init_features)
        self._stage_names = ["norm0" if stem == "imagenet" else "conv0"]
        ch = num_init_features
        layer_kwargs = dict(bn_size=bn_size, drop_rate=drop_rate, memory_efficient=memory_efficient)
        for i, num_layers in enumerate(block_config):
            modules.append((f"denseblock{i + 1}", DenseBlock(num_layers, ch, growth_rate, **layer_kwargs)))
            self._stage_names.append(f"denseblock{i + 1}")
            ch += num_layers * growth_rate
            if i != len(block_config) - 1:
                out_ch = int(ch * compression)
                modules.append((f"transition{i + 1}", Transition(ch, out_ch)))
                ch = out_ch
        modules.append((f"norm{len(block_config) + 1}", nn.BatchNorm2d(ch)))
        self.features = nn.Sequential(OrderedDict(modules))
        self.num_features = ch
        self.classifier = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        return [("stem" if i == 0 else n, getattr(self.features, n)) for i, n in enumerate(self._stage_names)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_densenet(block_config: Sequence[int], kwargs: dict[str, Any], **defaults: Any) -> DenseNet:
    return DenseNet(block_config, **{**defaults, **kwargs})


def build_cifar_bc(depth: int, growth_rate: int, kwargs: dict[str, Any]) -> DenseNet:
    """DenseNet-BC-depth-k for CIFAR: three blocks of (depth-4)/6 bottleneck layers, 2k stem channels."""
    n = (depth - 4) // 6
    return build_densenet(
        (n, n, n), kwargs, growth_rate=growth_rate, num_init_features=2 * growth_rate, stem="cifar",
        num_classes=10,
    )


# Reference top-1: torchvision's weights, or the paper (Table 3, single crop) where torchvision has none.


@register_model("densenet", upstream={"torchvision": "densenet121"}, reference_top1=74.434)
def densenet121(**kwargs: Any) -> DenseNet:
    return build_densenet((6, 12, 24, 16), kwargs)


@register_model("densenet", upstream={"torchvision": "densenet169"}, reference_top1=75.600)
def densenet169(**kwargs: Any) -> DenseNet:
    return build_densenet((6, 12, 32, 32), kwargs)


@register_model("densenet", upstream={"torchvision": "densenet201"}, reference_top1=76.896)
def densenet201(**kwargs: Any) -> DenseNet:
    return build_densenet((6, 12, 48, 32), kwargs)


@register_model("densenet", reference_top1=77.85)
def densenet264(**kwargs: Any) -> DenseNet:
    return build_densenet((6, 12, 64, 48), kwargs)


@register_model("densenet", data_config=CIFAR)
def densenet_bc_100_12(**kwargs: Any) -> DenseNet:
    return build_cifar_bc(100, 12, kwargs)


@register_model("densenet", data_config=CIFAR)
def densenet_bc_250_24(**kwargs: Any) -> DenseNet:
    return build_cifar_bc(250, 24, kwargs)


@register_model("densenet", data_config=CIFAR)
def densenet_bc_190_40(**kwargs: Any) -> DenseNet:
    return build_cifar_bc(190, 40, kwargs)
