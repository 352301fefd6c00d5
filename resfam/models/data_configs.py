"""Preprocessing of ImageNet variants, written as the libraries state it: input size and crop fraction."""
from __future__ import annotations

import math

from resfam.registry import IMAGENET_MEAN, IMAGENET_STD, DataConfig

# DPN weights were trained in MXNet on 0-255 images minus (124, 117, 104) times 0.0167.
DPN_MEAN = (124 / 255, 117 / 255, 104 / 255)
DPN_STD = (1 / (0.0167 * 255),) * 3
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


def imagenet_config(
    size: int = 224,
    crop_pct: float = 0.875,
    interpolation: str = "bilinear",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> DataConfig:
    """Resize the short side to floor(size / crop_pct), then center-crop `size` (timm's rule)."""
    return DataConfig(
        input_size=(3, size, size),
        resize=math.floor(size / crop_pct),
        crop=size,
        mean=mean,
        std=std,
        interpolation=interpolation,
    )
