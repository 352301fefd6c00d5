"""Real photos that ship with scikit-image and scikit-learn, as ~500x375 JPEGs a camera or phone would send."""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import skimage
import sklearn
from PIL import Image, ImageOps

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SKLEARN_IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"
SOURCES = [SKIMAGE_DATA / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                       "motorcycle_left.png", "hubble_deep_field.jpg")] + \
          [SKLEARN_IMAGES / n for n in ("china.jpg", "flower.jpg")]
SIZE = (500, 375)


@functools.cache
def jpeg_photos() -> tuple[bytes, ...]:
    """Each source photo fitted to 500x375 (crop to 4:3, resize) and encoded as JPEG quality 90."""
    out = []
    for path in SOURCES:
        with Image.open(path) as img:
            fitted = ImageOps.fit(img.convert("RGB"), SIZE, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        fitted.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return tuple(out)


@functools.cache
def digit_pngs(count: int = 64) -> tuple[bytes, ...]:
    """Real handwritten digits (scikit-learn), as the small grayscale PNGs the digits models take."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for image in digits.images[:count]:
        pixels = (np.asarray(image) * (255 / 16)).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.BILINEAR).save(buf, format="PNG")
        out.append(buf.getvalue())
    return tuple(out)


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """Inputs a client may get wrong, each with the content type it is sent under."""
    photo = jpeg_photos()[0]
    return {
        "truncated_jpeg": (photo[: len(photo) // 3], "image/jpeg"),
        "not_an_image": (b"hello, this is plain text and no picture", "image/png"),
        "empty": (b"", "image/jpeg"),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "image/svg+xml"),
    }
