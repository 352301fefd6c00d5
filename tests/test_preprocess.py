import io

import numpy as np
import pytest
from PIL import Image

from serve.errors import BadImage
from serve.runtime.preprocess import Preprocessing, decode_image, preprocess
from tests.images import encode, photo_bytes, png_declaring

RGB = Preprocessing(channels=3, resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
GRAY = Preprocessing(channels=1, resize=32, crop=32, mean=(0.5,), std=(0.25,))


def test_photo_becomes_normalised_chw_tensor():
    arr = preprocess(decode_image(photo_bytes("chelsea.png")), RGB)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    assert -2.2 < arr.min() < 0 < arr.max() < 2.7


def test_resize_shorter_side_then_center_crop_by_hand():
    # 4x2 image, resize shorter side to 2 keeps it, crop 2 takes the middle two columns.
    pixels = np.array([[0, 64, 128, 255], [0, 64, 128, 255]], np.uint8)
    spec = Preprocessing(channels=1, resize=2, crop=2, mean=(0.0,), std=(1.0,), interpolation="nearest")
    arr = preprocess(Image.fromarray(pixels, "L"), spec)
    np.testing.assert_allclose(arr[0], np.array([[64, 128], [64, 128]]) / 255.0, rtol=1e-6)


def test_normalisation_uses_mean_and_std():
    img = Image.new("L", (32, 32), 255)
    np.testing.assert_allclose(preprocess(img, GRAY), np.full((1, 32, 32), (1.0 - 0.5) / 0.25), rtol=1e-6)


def test_normalisation_table_is_bit_exact_arithmetic_for_every_pixel_value():
    # Every uint8 value in every channel, through the lookup, equals the float32 arithmetic written out.
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = Image.fromarray(np.stack([values, values[::-1], values.T], axis=-1), "RGB")
    spec = Preprocessing(channels=3, resize=16, crop=16, mean=RGB.mean, std=RGB.std)
    pixels = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    expected = (pixels - np.asarray(RGB.mean, np.float32)[:, None, None]) / np.asarray(RGB.std, np.float32)[:, None, None]
    got = preprocess(img, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1", "F"])
def test_every_pillow_mode_reduces_to_model_channels(mode):
    src = Image.open(io.BytesIO(photo_bytes("astronaut.png"))).convert("RGB")
    img = src.convert("L").convert("I;16") if mode == "I;16" else src.convert(mode)
    for spec in (RGB, GRAY):
        assert preprocess(img, spec).shape == spec.input_shape


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"definitely not an image", "not an image"),
        (photo_bytes("coffee.png")[:3000], "truncated"),
        (photo_bytes("rocket.jpg")[:2000], "truncated"),
    ],
)
def test_bad_bytes_raise_bad_image(data, message):
    with pytest.raises(BadImage, match=message):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_declaring(100_000, 100_000)  # 10 billion pixels declared in a few hundred bytes
    assert len(bomb) < 1_000
    with pytest.raises(BadImage, match="pixels"):
        decode_image(bomb, max_pixels=40_000_000)


def test_first_frame_of_animated_gif():
    frames = [Image.new("L", (16, 16), v) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    img = decode_image(buf.getvalue())
    assert np.asarray(img.convert("L"))[0, 0] == 10


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        Preprocessing(channels=2, resize=32, crop=32, mean=(0.5, 0.5), std=(1, 1))
    with pytest.raises(ValueError):
        Preprocessing(channels=1, resize=16, crop=32, mean=(0.5,), std=(1,))
    with pytest.raises(ValueError):
        Preprocessing(channels=1, resize=32, crop=32, mean=(0.5,), std=(1,), interpolation="magic")
