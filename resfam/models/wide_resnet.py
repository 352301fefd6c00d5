"""Wide ResNets (Zagoruyko & Komodakis 2016).

CIFAR WRN-d-k: pre-activation basic blocks, (d-4)/6 per stage, widths 16k/32k/64k, dropout between the
two convs (0.3, the paper's CIFAR setting; drop_rate=... changes it). The ImageNet wide_resnet50_2 and
wide_resnet101_2 are torchvision's: ResNet-50/101 bottlenecks with a doubled inner width.
"""
from __future__ import annotations

from typing import Any

from resfam.models.resnet import ResNet, build_resnet
from resfam.models.resnetv2 import ResNetV2, build_resnetv2
from resfam.registry import CIFAR, register_model


def build_wrn(depth: int, widen: int, kwargs: dict[str, Any]) -> ResNetV2:
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    drop_rate = kwargs.pop("drop_rate", 0.3)
    block_kwargs = {"drop_rate": drop_rate, **kwargs.pop("block_kwargs", {})}
    return build_resnetv2(
        "basic", (n, n, n), kwargs, channels=(16 * widen, 32 * widen, 64 * widen), stem="cifar",
        stem_width=16, num_classes=10, block_kwargs=block_kwargs,
    )


@register_model("wide_resnet", data_config=CIFAR)
def wrn_16_4(**kwargs: Any) -> ResNetV2:
    return build_wrn(16, 4, kwargs)


@register_model("wide_resnet", data_config=CIFAR)
def wrn_16_8(**kwargs: Any) -> ResNetV2:
    return build_wrn(16, 8, kwargs)


@register_model("wide_resnet", data_config=CIFAR)
def wrn_28_10(**kwargs: Any) -> ResNetV2:
    return build_wrn(28, 10, kwargs)


@register_model("wide_resnet", data_config=CIFAR)
def wrn_40_4(**kwargs: Any) -> ResNetV2:
    return build_wrn(40, 4, kwargs)


@register_model("wide_resnet", upstream={"torchvision": "wide_resnet50_2"}, reference_top1=78.468)
def wide_resnet50_2(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 6, 3), kwargs, base_width=128)


@register_model("wide_resnet", upstream={"torchvision": "wide_resnet101_2"}, reference_top1=78.848)
def wide_resnet101_2(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs, base_width=128)
