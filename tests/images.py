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


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")
