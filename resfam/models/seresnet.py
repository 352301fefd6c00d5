"""SE-ResNet and SE-ResNeXt (Hu et al. 2018): ResNets with a squeeze-excitation gate on every branch.

The reduction ratio r is 16 unless attn_kwargs={"reduction": r} says otherwise; any residual family
takes the same gate through attn_layer="se". Layout follows timm.
"""
from __future__ import annotations

from typing import Any

from resfam.models.data_configs import imagenet_config
from resfam.models.resnet import CIFAR_RESNET, ResNet, build_resnet
from resfam.registry import CIFAR, register_model

SE = dict(attn_layer="se")
BICUBIC = imagenet_config(interpolation="bicubic")

# Reference top-1 from the SE paper (Table 2, single 224 crop), except seresnet50 (timm's a1 weights).
# timm has the architectures of seresnet18/34/101/152 but no weights, so they name no upstream.


@register_model("seresnet")
def seresnet18(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (2, 2, 2, 2), kwargs, **SE)


@register_model("seresnet")
def seresnet34(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (3, 4, 6, 3), kwargs, **SE)


@register_model(
    "seresnet", imagenet_config(crop_pct=0.95, interpolation="bicubic"), {"timm": "seresnet50.a1_in1k"}, 80.1
)
def seresnet50(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 6, 3), kwargs, **SE)


@register_model("seresnet", reference_top1=77.62)
def seresnet101(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs, **SE)


@register_model("seresnet", reference_top1=78.43)
def seresnet152(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 8, 36, 3), kwargs, **SE)


@register_model("seresnext", BICUBIC, {"timm": "seresnext50_32x4d.racm_in1k"}, 79.03)
def seresnext50_32x4d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 6, 3), kwargs, cardinality=32, base_width=4, **SE)


@register_model("seresnext", BICUBIC, {"timm": "seresnext101_32x4d.gluon_in1k"}, 80.19)
def seresnext101_32x4d(**kwargs: Any) -> ResNet:
    return build_resnet("bottleneck", (3, 4, 23, 3), kwargs, cardinality=32, base_width=4, **SE)


@register_model("seresnet", data_config=CIFAR)
def seresnet20(**kwargs: Any) -> ResNet:
    return build_resnet("basic", (3, 3, 3), kwargs, **CIFAR_RESNET, **SE)
