"""Inputs the fuzzers in fuzz/ found (or that fix a finding's whole class): each now gets a 4xx ApiError.

The bytes are committed under fuzz/regressions/<target>/ in that target's input layout; tests/test_fuzz_smoke.py
also replays them through the fuzz targets themselves.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image
from starlette.requests import Request

from serve.ab.feedback import parse_feedback
from serve.api.body import read_body
from serve.api.oip import parse_infer_request
from serve.errors import ApiError, BadImage, BadRequest
from serve.runtime.preprocess import MAX_ASPECT_RATIO, Preprocessing, decode_and_preprocess, decode_image
from tests.images import encode

REGRESSIONS = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"
RESNET50 = Preprocessing(channels=3, resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DIGITS = Preprocessing(channels=1, resize=32, crop=32, mean=(0.306,), std=(0.324,))


def _files(target: str) -> list[Path]:
    return sorted((REGRESSIONS / target).iterdir())


@pytest.mark.parametrize("path", _files("oip"), ids=lambda p: p.name)
def test_oip_malformed_request_is_bad_request(path: Path):
    """Found: a JSON header that is not an object, non-object inputs/parameters/outputs, a non-integer
    binary_data_size, non-list or non-ASCII base64 data, integers beyond float32 and deep nesting raised
    AttributeError, TypeError, ValueError, OverflowError or RecursionError (a 500)."""
    header_length, _, body = path.read_bytes().partition(b"\n")
    with pytest.raises(BadRequest):
        parse_infer_request(body, header_length.decode() or None, (1, 32, 32), 10)


def test_feedback_nested_too_deep_is_bad_request():
    """Found: json.loads raises RecursionError, not JSONDecodeError, for nesting deeper than the interpreter's limit."""
    with pytest.raises(BadRequest):
        parse_feedback((REGRESSIONS / "feedback" / "deep-nesting").read_bytes())


def _request(content_length: bytes, body: bytes) -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/feedback", "query_string": b"",
             "headers": [(b"content-length", content_length)]}
    return Request(scope, receive)


def test_content_length_of_superscript_digits_is_not_a_crash():
    """Found: '²'.isdigit() is True but int('²') raises ValueError; such a header is now ignored like any
    other non-number and the body is read within the limit as it arrives."""
    control_and_type, _, rest = (REGRESSIONS / "body" / "content-length-superscript").read_bytes().partition(b"\n")
    body, _, declared = rest.rpartition(b"\r\r")
    assert declared == "²".encode("latin-1")
    assert asyncio.run(read_body(_request(declared, body), 1024)) == body


@pytest.mark.parametrize("spec", [DIGITS, RESNET50], ids=["digits", "resnet50"])
def test_image_far_from_square_is_bad_image(spec: Preprocessing):
    """Found: an 8x2,359,302 TIFF (under max_pixels) made preprocessing resize to 256x75 million pixels (58 GB)."""
    data = (REGRESSIONS / "image" / "tall-tiff-8x2359302").read_bytes()
    with pytest.raises(BadImage, match="more than 100 times"):
        decode_and_preprocess(data, spec, 40_000_000)


@pytest.mark.parametrize("size", [(MAX_ASPECT_RATIO, 1), (1, MAX_ASPECT_RATIO), (3 * MAX_ASPECT_RATIO, 3)])
def test_aspect_ratio_at_the_limit_is_served(size: tuple[int, int]):
    out = decode_and_preprocess(encode(Image.new("RGB", size, (200, 10, 10)), "PNG"), RESNET50, 40_000_000)
    assert out.shape == (3, 224, 224)


def test_large_image_in_a_python_decoded_encoding_is_bad_image():
    """Found: a 118-byte RLE BMP declaring 3,997,704x6 pixels kept Pillow's Python RLE decoder busy for 12.7 s."""
    with pytest.raises(BadImage, match="bmp_rle"):
        decode_image((REGRESSIONS / "image" / "bmp-rle-slow").read_bytes())
