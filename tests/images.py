"""Real images that ship offline with scikit-image and scikit-learn, encoded as clients send them."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import skimage
import sklearn
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SKLEARN_IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"
PHOTOS = [SKIMAGE_DATA / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")] + [
    SKLEARN_IMAGES / "china.jpg"
]


def photo_bytes(name: str = "chelsea.png") -> bytes:
    return (SKIMAGE_DATA / name).read_bytes()


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_of(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array), "PNG")
