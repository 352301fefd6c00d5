"""ResNeXt (Xie et al. 2017): ResNet bottlenecks whose 3x3 is a grouped conv of `cardinality` groups."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from resfam.models.resnet import ResNet, build_resnet
from resfam.registry import CIFAR, IMAGENET, register_model

# CIFAR ResNeXt-29 (paper sec. 5.2): 3x3 stem of 64, three stages of 3 bottlenecks, projection shortcuts.
CIFAR_RESNEXT = dict(stem="cifar", stem_width=64, planes=(64, 128, 256), num_classes=10)


@register_model("resnext", upstream={"torchvision": "resnext50_32x4d"}, reference_top1=77.618)
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 6, 3), kwargs, cardinality=32, base_width=4)


@register_model("resnext", upstream={"torchvision": "resnext101_32x8d"}, reference_top1=79.312)
def resnext101_32x8d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs, cardinality=32, base_width=8)


# torchvision's only weights for it come from the newer recipe, evaluated after a resize to 232.
@register_model("resnext", upstream={"torchvision": "resnext101_64x4d"}, reference_top1=83.246,
                data_config=replace(IMAGENET, resize=232))
def resnext101_64x4d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs, cardinality=64, base_width=4)


@register_model("resnext", data_config=CIFAR)
def resnext29_8x64d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 3, 3), kwargs, cardinality=8, base_width=64, **CIFAR_RESNEXT)


@register_model("resnext", data_config=CIFAR)
def resnext29_16x64d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 3, 3), kwargs, cardinality=16, base_width=64, **CIFAR_RESNEXT)


@register_model("resnext", data_config=CIFAR)
def resnext20_4x8d(**kwargs: Any) -> ResNet:
    """Small CIFAR ResNeXt: 3 stages x 2 bottlenecks, cardinality 4, 8 channels per group at stage 1."""
    return build_resnet(
        "bottleneck", (2, 2, 2), kwargs, stem="cifar", stem_width=16, planes=(16, 32, 64),
        cardinality=4, base_width=32, num_classes=10,
    )
