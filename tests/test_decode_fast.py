"""`decode: fast`: a JPEG decoder scaling in the DCT must change nothing a model sees beyond rounding."""
import asyncio
import functools
import io
import struct

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from serve.errors import BadImage
from serve.runtime.decoding import DecodeBudget
from serve.runtime.preprocess import (REDUCING_GAP, Preprocessing, decode_and_preprocess, decode_and_preprocess_all, decode_image,
                                      decoding_footprint, open_image, resized_size)
from serve.runtime.repository import load_artifact
from tests.images import encode, photo_bytes
from loadtests.server import ROOT

RGB = Preprocessing(channels=3, resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DIGITS = load_artifact(ROOT / "models", "seresnet20_digits", "latest")
PHONE = (4032, 3024)


@functools.cache
def large_jpeg(name: str = "chelsea.png", size: tuple[int, int] = PHONE, **params) -> bytes:
    with Image.open(io.BytesIO(photo_bytes(name))) as img:
        return encode(img.convert("RGB").resize(size, Image.Resampling.BICUBIC), "JPEG", quality=90, **params)


def both(data: bytes, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    return decode_and_preprocess(data, spec, 40_000_000, "exact"), decode_and_preprocess(data, spec, 40_000_000, "fast")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_formats_without_dct_scaling_decode_identically(fmt):
    with Image.open(io.BytesIO(photo_bytes("astronaut.png"))) as img:
        data = encode(img.convert("RGB").resize((1600, 1200)), fmt)
    for spec in (RGB, DIGITS.preprocessing):
        exact, fast = both(data, spec)
        assert np.array_equal(exact, fast)


def test_large_jpeg_decodes_smaller_and_close_to_exact():
    data = large_jpeg()
    assert open_image(data, fast_for=RGB).size == (1008, 756)  # 1/4: still above twice 341x256
    exact, fast = both(data, RGB)
    diff = np.abs(exact - fast)
    assert diff.mean() < 0.02 and diff.max() < 0.25  # normalised units: 1/255 of a channel is ~0.017


def test_large_digit_photo_keeps_its_top1():
    session = ort.InferenceSession(str(DIGITS.onnx_path), providers=["CPUExecutionProvider"])
    spec = DIGITS.preprocessing
    from serve.ab.datasets import digits
    split = digits("test")
    agree = 0
    for n in range(10):
        img, _ = split[n * 7]
        data = encode(img.convert("RGB").resize(PHONE, Image.Resampling.BICUBIC), "JPEG", quality=90)
        exact, fast = both(data, spec)
        assert np.abs(exact - fast).mean() < 0.05
        logits = session.run(None, {session.get_inputs()[0].name: np.stack([exact, fast])})[0]
        agree += int(np.argmax(logits[0]) == np.argmax(logits[1]))
    assert agree == 10


@pytest.mark.parametrize("size", [(4032, 3024), (3024, 4032), (2048, 1536), (2047, 1535), (1023, 300), (300, 4000),
                                  (513, 2100), (257, 257), (200, 150)])
@pytest.mark.parametrize("spec", [RGB, DIGITS.preprocessing], ids=["rgb256", "digits32"])
def test_never_decodes_below_the_resize_target(size, spec):
    data = encode(Image.new("RGB", size, (90, 120, 30)), "JPEG", quality=80)
    got = open_image(data, fast_for=spec).size
    # at least the reducing gap above the resize target; a small photo stays whole
    wanted = tuple(min(REDUCING_GAP * w, s) for w, s in zip(resized_size(size, spec), size))
    assert got[0] >= wanted[0] and got[1] >= wanted[1]
    for factor in (2, 4, 8):  # and it took the smallest scale that still covers the target
        finer = (-(-size[0] // factor), -(-size[1] // factor))
        if got[0] > finer[0] and finer[0] >= wanted[0] and finer[1] >= wanted[1]:
            pytest.fail(f"{size} decoded at {got}, but 1/{factor} ({finer}) still covers {wanted}")
    assert min(got) >= min(spec.resize, *size)  # the resize that follows still downsamples (or keeps) the image


def test_fast_decoding_honours_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = large_jpeg("astronaut.png", exif=exif.tobytes())
    upright = decode_image(data)
    fast = decode_image(data, fast_for=RGB)
    assert upright.size == (3024, 4032) and fast.size == (756, 1008)
    exact, quick = both(data, RGB)
    assert np.abs(exact - quick).mean() < 0.02


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim width x height."""
    data = bytearray(encode(Image.new("RGB", (64, 48), (10, 20, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_max_pixels_still_refuses_a_bomb_before_scaling():
    bomb = jpeg_declaring(60_000, 60_000)  # 3.6 billion pixels; 1/8 of it would be only 56 million
    with pytest.raises(BadImage, match="pixels"):
        decode_image(bomb, max_pixels=40_000_000, fast_for=RGB)
    with pytest.raises(BadImage, match="pixels"):
        decode_and_preprocess(jpeg_declaring(8000, 6000), RGB, 40_000_000, "fast")  # 48 MP


def test_footprint_counts_the_scale_decoded_to():
    data = large_jpeg()
    assert decoding_footprint(open_image(data), 3) == 4032 * 3024 * 4  # Pillow keeps RGB in 4 bytes a pixel
    assert decoding_footprint(open_image(data), 1) == 4032 * 3024 * 5  # plus the grayscale copy
    assert decoding_footprint(open_image(data, fast_for=DIGITS.preprocessing), 1) == 504 * 378  # Y only


def test_a_request_holds_its_footprint_while_decoding_and_returns_it():
    data = large_jpeg()

    async def main() -> tuple[int, int]:
        budget = DecodeBudget(1 << 30, 1.0)
        seen = []
        task = asyncio.create_task(decode_and_preprocess_all([data, data], RGB, 40_000_000, decode="exact",
                                                             budget=budget))
        while not task.done():
            seen.append(budget.held)
            await asyncio.sleep(0.005)
        await task
        return max(seen), budget.held

    peak, after = asyncio.run(main())
    assert peak == 2 * 4032 * 3024 * 4 and after == 0


def test_a_bad_image_in_a_request_returns_the_budget():
    async def main() -> int:
        budget = DecodeBudget(1 << 30, 1.0)
        with pytest.raises(BadImage):
            await decode_and_preprocess_all([large_jpeg(), large_jpeg()[:50_000]], RGB, 40_000_000, budget=budget)
        return budget.held

    assert asyncio.run(main()) == 0
