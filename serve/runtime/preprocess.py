"""Decode and preprocess images exactly as a model's metadata says; torch-free, shared with training."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import time
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import ExifTags, Image, ImageOps

from serve.errors import BadImage
from serve.runtime.decoding import DecodeBudget

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


@contextlib.contextmanager
def _decoding_errors() -> Iterator[None]:
    """Pillow's many exception types for bad bytes become one clear BadImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image declares too many pixels: {exc}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("the bytes are not an image in a format we read (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadImage(f"cannot decode image: {type(exc).__name__}: {exc}") from None


# fast decoding leaves the final resize at least this reduction: the DCT scale alone acts as an 8x8 box filter,
# and resizing only 1.5x after it moved digit inputs by up to 0.6 (normalised) where exact decoding's filter
# differs; with 2 (as Pillow's thumbnail) 0.17, at ~20 ms instead of ~14 for a 4032x3024 JPEG to ResNet-50's 256.
REDUCING_GAP = 2


# Pillow decodes a few encodings in Python (Image.DECODERS: RLE BMP, plain PPM, QOI, ...) at up to ~0.5 us a pixel:
# a 118-byte RLE BMP declaring 3,997,704x6 pixels took 12.7 s (found by fuzz/). They get a pixel limit of their own.
PYTHON_DECODER_MAX_PIXELS = 1_000_000


def open_image(data: bytes, max_pixels: int = 40_000_000, fast_for: Preprocessing | None = None) -> Image.Image:
    """Read the header only: refuse more than `max_pixels` as declared (before any scaling, so a bomb is still
    a bomb), select the first frame, and with `fast_for` ask a JPEG decoder for its smallest DCT scale (1/2,
    1/4, 1/8) that still covers REDUCING_GAP times the model's resize on both sides, in the model's channels
    (other formats ignore the request). The resize that follows then still downsamples, from far fewer pixels."""
    if not data:
        raise BadImage("empty body: send an image")
    with _decoding_errors():
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise BadImage(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
        img.seek(0)
        if width * height > PYTHON_DECODER_MAX_PIXELS and any(t.codec_name in Image.DECODERS for t in img.tile):
            raise BadImage(f"image is {width}x{height} pixels; the limit for its encoding "
                           f"({img.tile[0].codec_name}) is {PYTHON_DECODER_MAX_PIXELS} pixels")
        if fast_for is not None:
            width, height = resized_size(img.size, fast_for)
            img.draft("L" if fast_for.channels == 1 else None, (REDUCING_GAP * width, REDUCING_GAP * height))
    return img


def load_image(img: Image.Image) -> Image.Image:
    """Decode fully (so truncation is caught here), upright by EXIF."""
    with _decoding_errors():
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    return img


def decode_image(data: bytes, max_pixels: int = 40_000_000, fast_for: Preprocessing | None = None) -> Image.Image:
    """Decode fully, first frame only, upright by EXIF; see open_image for `fast_for`."""
    return load_image(open_image(data, max_pixels, fast_for))


# Bytes per pixel as Pillow stores each mode (RGB and the two-band modes take four).
_NARROW_MODES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def decoding_footprint(img: Image.Image, channels: int) -> int:
    """Peak bytes of pixels that loading and preprocessing an opened image hold: the decoded image, plus the
    larger of its upright copy (when EXIF turns it) and its copy in the model's mode, each made while the decoded
    one is still held. A JPEG's EXIF precedes its pixels; other formats may place it after, so without EXIF in
    the header they are counted as turned (getexif would decode a PNG to find out)."""
    pixels = img.size[0] * img.size[1]
    decoded = pixels * _NARROW_MODES.get(img.mode, 4)
    header_says = "exif" in img.info or img.format in ("JPEG", "MPO")
    turned = decoded if not header_says or img.getexif().get(ExifTags.Base.Orientation, 1) != 1 else 0
    target = "L" if channels == 1 else "RGB"
    converted = 0 if img.mode == target else pixels * _NARROW_MODES.get(target, 4)
    return decoded + max(turned, converted)


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
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)  # convert to the same mode would copy


def resized_size(size: tuple[int, int], spec: Preprocessing) -> tuple[int, int]:
    """The size preprocessing resizes to: shorter side to `resize`, neither side below `crop`."""
    width, height = size
    scale = spec.resize / min(width, height)
    return max(spec.crop, round(width * scale)), max(spec.crop, round(height * scale))


# Resizing the shorter side to `resize` stretches the longer one by the same factor: at 100:1 and resize 256 that is
# 25,600x256 pixels (20 MB in RGB); unbounded, an 8x2,359,302 TIFF (under max_pixels) asked for 58 GB (found by fuzz/).
MAX_ASPECT_RATIO = 100


def preprocess(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Image -> float32 array of shape (C, crop, crop)."""
    width, height = img.size
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(f"image is {width}x{height} pixels: one side is more than {MAX_ASPECT_RATIO} times the other")
    img = _to_mode(img, spec.channels)
    new_size = resized_size(img.size, spec)
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


DECODE_MODES = ("exact", "fast")


def decode_and_preprocess(data: bytes, spec: Preprocessing, max_pixels: int, decode: str = "exact") -> np.ndarray:
    """Encoded bytes -> model input; `decode` fast lets a JPEG decoder scale down (see open_image)."""
    return preprocess(load_image(_open_for(data, spec, max_pixels, decode)), spec)


def _open_for(data: bytes, spec: Preprocessing, max_pixels: int, decode: str) -> Image.Image:
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    return open_image(data, max_pixels, spec if decode == "fast" else None)


def _open_all(images: list[bytes], spec: Preprocessing, max_pixels: int, decode: str) -> tuple[list[Image.Image], int]:
    """Every image opened (headers only) and the bytes of pixels decoding them all at once would hold."""
    opened = [_open_for(data, spec, max_pixels, decode) for data in images]
    return opened, sum(decoding_footprint(img, spec.channels) for img in opened)


def _load_and_preprocess(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    return preprocess(load_image(img), spec)


async def decode_and_preprocess_all(images: list[bytes], spec: Preprocessing, max_pixels: int,
                                    executor: Executor | None = None, decode: str = "exact",
                                    budget: DecodeBudget | None = None) -> tuple[np.ndarray, float]:
    """The batch for `images`, decoded in worker threads off the event loop, and the seconds per image.

    With a `budget`, the request first reserves the bytes its images will hold decoded (read from their headers,
    at the scale they will be decoded to), waiting while other requests hold them; see DecodeBudget."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    opened, footprint = await loop.run_in_executor(executor, _open_all, images, spec, max_pixels, decode)
    async with budget.reserve(footprint) if budget is not None else contextlib.nullcontext():
        # Every image finishes before the reservation ends, even when one fails: its bytes are held until then.
        arrays = await asyncio.gather(*(loop.run_in_executor(executor, _load_and_preprocess, img, spec)
                                        for img in opened), return_exceptions=True)
    failed = next((a for a in arrays if isinstance(a, BaseException)), None)
    if failed is not None:
        raise failed
    return np.stack(arrays), (time.perf_counter() - started) / len(images)
