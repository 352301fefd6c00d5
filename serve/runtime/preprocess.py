"""Decode and preprocess images exactly as a model's metadata says; torch-free, shared with training."""
from __future__ import annotations

import asyncio
import functools
import io
import time
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageOps

from serve.errors import BadImage

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, center-crop `crop`, scale to [0,1], normalise per channel."""

    channels: int
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}")
        if self.crop > self.resize:
            raise ValueError("crop cannot exceed resize")

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> "Preprocessing":
        return cls(
            channels=int(meta["channels"]),
            resize=int(meta["resize"]),
            crop=int(meta["crop"]),
            mean=tuple(float(v) for v in meta["mean"]),
            std=tuple(float(v) for v in meta["std"]),
            interpolation=str(meta["interpolation"]),
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.crop, self.crop)


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode fully (so truncation is caught here), first frame only, upright by EXIF."""
    if not data:
        raise BadImage("empty body: send an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise BadImage(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            img.seek(0)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image declares too many pixels: {exc}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("the bytes are not an image in a format we read (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadImage(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    return img


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Reduce any Pillow mode to L or RGB; transparency becomes black, the background of our digit models."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L" if channels == 1 else "RGB")


def preprocess(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Image -> float32 array of shape (C, crop, crop)."""
    img = _to_mode(img, spec.channels)
    width, height = img.size
    scale = spec.resize / min(width, height)
    new_size = (max(spec.crop, round(width * scale)), max(spec.crop, round(height * scale)))
    if new_size != img.size:
        img = img.resize(new_size, _INTERPOLATION[spec.interpolation])
    left = (new_size[0] - spec.crop) // 2
    top = (new_size[1] - spec.crop) // 2
    img = img.crop((left, top, left + spec.crop, top + spec.crop))
    pixels = np.asarray(img).reshape(spec.crop, spec.crop, spec.channels)
    table = normalisation_table(spec.mean, spec.std)
    out = np.empty(spec.input_shape, np.float32)
    for channel in range(spec.channels):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


@functools.lru_cache(maxsize=32)
def normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(value / 255 - mean) / std for every uint8 value and channel, in float32 as the arithmetic would give:
    a lookup per pixel is a third of the CPU of computing it (the replica's CPU is the inference's)."""
    values = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return (values[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def decode_and_preprocess(data: bytes, spec: Preprocessing, max_pixels: int) -> np.ndarray:
    """Encoded bytes -> model input; the one function both preprocessing placements run."""
    return preprocess(decode_image(data, max_pixels), spec)


async def decode_and_preprocess_all(images: list[bytes], spec: Preprocessing, max_pixels: int,
                                    executor: Executor | None = None) -> tuple[np.ndarray, float]:
    """The batch for `images`, decoded in worker threads off the event loop, and the seconds per image."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    arrays = await asyncio.gather(*(loop.run_in_executor(executor, decode_and_preprocess, data, spec, max_pixels)
                                    for data in images))
    return np.stack(arrays), (time.perf_counter() - started) / len(images)
