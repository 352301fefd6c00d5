"""Data for training: the labelled sets of serve.ab.datasets, their preprocessing and augmentation.

Pixels reach a model only through serve.runtime.preprocess. The sets themselves (digits, ImageFolder, the
seeded split) live torch-free in serve.ab.datasets, so the server-side evaluation reads the same split.
"""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from resfam.registry import DataConfig
from serve.ab.datasets import (  # noqa: F401  (the data API of resfam, implemented torch-free in serve)
    DIGIT_LABELS, SPLIT_SEED, SPLITS, LabelledImages, _digits_arrays, digits, image_folder, load_dataset,
    render_digit, stratified_split)
from serve.runtime.preprocess import Preprocessing, preprocess

# Measured on the digits training split rendered at 32x32 (bilinear): pixel mean 0.306, std 0.324.
DIGITS_CONFIG = DataConfig(
    input_size=(1, 32, 32), resize=32, crop=32, mean=(0.306,), std=(0.324,), interpolation="bilinear",
    num_classes=10, dataset="sklearn-digits",
)


def dataset_config(spec: str | Path, model_config: DataConfig) -> DataConfig:
    """The preprocessing a model trains with: fixed for digits, the model's own for a folder."""
    if str(spec) != "digits":
        return replace(model_config, dataset=Path(spec).resolve().name)
    if model_config.channels != 1:
        raise ValueError(f"digits are grayscale: build the model with in_chans=1, not {model_config.channels}")
    return DIGITS_CONFIG


def preprocessing(config: DataConfig) -> Preprocessing:
    """The serving-side spec for a data config, so training and serving read the same fields."""
    return Preprocessing.from_metadata(config.to_dict())


def preprocess_all(data: LabelledImages, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The whole split as one (N, C, H, W) float32 batch and its targets, for evaluation."""
    arrays = [preprocess(data[i][0], spec) for i in range(len(data))]
    return np.stack(arrays), np.asarray(data.targets, dtype=np.int64)


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names in the usual index order (shipped inside torchvision: no download)."""
    from torchvision.models import ResNet50_Weights  # imported here: only ImageNet exports need it

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def augment(img: Image.Image, rng: random.Random, max_shift: float = 0.1, max_degrees: float = 10.0) -> Image.Image:
    """A small random rotation and shift, filled with black; for training only."""
    width, height = img.size
    return img.rotate(
        rng.uniform(-max_degrees, max_degrees),
        resample=Image.Resampling.BILINEAR,
        translate=(round(rng.uniform(-max_shift, max_shift) * width), round(rng.uniform(-max_shift, max_shift) * height)),
        fillcolor=0,
    )
