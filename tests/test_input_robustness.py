"""Every kind of input a client may send: accepted formats answer like the plain PNG, bad ones get
their specified JSON error, and none of it disturbs valid traffic running beside it."""
from __future__ import annotations

import io
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from resfam.data import digits
from tests.images import encode, png_declaring

pytestmark = pytest.mark.integration


def _digit(index: int = 0, size: int = 64) -> Image.Image:
    return digits("test")[index][0].resize((size, size), Image.Resampling.NEAREST)


def _exif_rotated_jpeg(img: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer rotates 90 degrees clockwise, so store it turned the other way
    return encode(img.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def _sixteen_bit_png(img: Image.Image) -> bytes:
    return encode(Image.fromarray(np.asarray(img, np.uint16) * 257), "PNG")


def _animated_gif(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="GIF", save_all=True, append_images=[Image.new("L", img.size, 128)])
    return buf.getvalue()


ACCEPTED = {
    "jpeg": lambda im: encode(im, "JPEG", quality=95),
    "webp": lambda im: encode(im, "WEBP", lossless=True),
    "bmp": lambda im: encode(im, "BMP"),
    "gif-first-frame": _animated_gif,
    "tiff": lambda im: encode(im, "TIFF"),
    "rgb-png": lambda im: encode(im.convert("RGB"), "PNG"),
    "rgba-png": lambda im: encode(im.convert("RGBA"), "PNG"),
    "palette-png": lambda im: encode(im.convert("P"), "PNG"),
    "cmyk-jpeg": lambda im: encode(im.convert("RGB").convert("CMYK"), "JPEG", quality=95),
    "16-bit-png": _sixteen_bit_png,
    "exif-rotated-jpeg": _exif_rotated_jpeg,
    "large-4000px": lambda im: encode(im.resize((4000, 4000), Image.Resampling.NEAREST), "PNG"),
}


@pytest.fixture(scope="module")
def plain(client):
    img = _digit()
    answer = client.post("/classify", content=encode(img, "PNG"), headers={"Content-Type": "image/png"},
                         params={"k": 1}).json()
    return img, answer["predictions"][0]


@pytest.mark.parametrize("kind", ACCEPTED)
def test_accepted_formats_classify_like_the_plain_png(client, plain, kind):
    img, expected = plain
    r = client.post("/classify", content=ACCEPTED[kind](img), headers={"Content-Type": "image/png"}, params={"k": 1})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"][0]
    assert got["index"] == expected["index"]
    if kind in ("webp", "bmp", "tiff", "rgb-png", "rgba-png", "palette-png", "16-bit-png"):  # lossless
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/plain", "application/octet-stream", None])
def test_wrong_or_missing_content_type_is_sniffed(client, plain, content_type):
    img, expected = plain
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/classify", content=encode(img, "PNG"), headers=headers, params={"k": 1})
    assert r.status_code == 200 and r.json()["predictions"][0]["index"] == expected["index"]


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'

BAD = {
    "empty": (dict(content=b""), 400, "bad_image"),
    "not-an-image": (dict(content=b"hello, world"), 400, "bad_image"),
    "truncated-png": (dict(content=encode(_digit(size=256), "PNG")[:600]), 400, "bad_image"),
    "corrupt-jpeg": (dict(content=encode(_digit(size=256), "JPEG")[:20] + b"\x00" * 2000), 400, "bad_image"),
    "decompression-bomb": (dict(content=png_declaring(100_000, 100_000)), 400, "bad_image"),
    "svg": (dict(content=SVG, headers={"Content-Type": "image/svg+xml"}), 415, "unsupported_media_type"),
    "svg-as-png": (dict(content=SVG, headers={"Content-Type": "image/png"}), 415, "unsupported_media_type"),
    "multipart-without-file": (dict(files={"picture": ("a.png", encode(_digit(), "PNG"))}), 400, "bad_request"),
    "too-many-images": (dict(files=[("file", (f"{i}.png", encode(_digit(), "PNG"))) for i in range(17)]),
                        413, "payload_too_large"),
    "k-zero": (dict(content=encode(_digit(), "PNG"), params={"k": "0"}), 422, "bad_parameter"),
    "k-negative": (dict(content=encode(_digit(), "PNG"), params={"k": "-1"}), 422, "bad_parameter"),
    "k-huge": (dict(content=encode(_digit(), "PNG"), params={"k": "1000000"}), 422, "bad_parameter"),
    "k-not-a-number": (dict(content=encode(_digit(), "PNG"), params={"k": "lots"}), 422, "bad_parameter"),
    "unknown-model": (dict(content=encode(_digit(), "PNG"), params={"model": "resnet9000"}), 404, "model_not_found"),
    "unknown-version": (dict(content=encode(_digit(), "PNG"), params={"model": "resnext20_digits/99"}),
                        404, "model_not_found"),
    "model-with-path": (dict(content=encode(_digit(), "PNG"), params={"model": "../../etc/passwd"}),
                        404, "model_not_found"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_its_error(client, case):
    kwargs, status, code = BAD[case]
    r = client.post("/classify", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def _read_http_response(sock: socket.socket) -> str:
    """Headers and body may arrive in separate segments: read until Content-Length is satisfied."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_body_over_the_limit_is_413_without_reading_it(client, server):
    declared = 21 * 1024 * 1024
    # Declare 21 MiB, send 1 KiB: the answer must come without the rest of the body.
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode() + b"\xff" * 1024)
        answer = _read_http_response(sock)
    assert answer.startswith("HTTP/1.1 413") and "payload_too_large" in answer
    r = client.post("/classify", content=b"\xff" * declared)  # and when it is all sent
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_bad_inputs_beside_valid_traffic_leave_valid_answers_unchanged(client):
    test = digits("test")
    pngs = [encode(test[i][0], "PNG") for i in range(24)]
    single = [client.post("/classify", content=p, params={"k": 3}).json()["predictions"] for p in pngs]
    jobs = [("good", i) for i in range(len(pngs))] + [("bad", case) for case in BAD] * 2

    def send(job):
        kind, key = job
        if kind == "good":
            return kind, key, client.post("/classify", content=pngs[key], params={"k": 3})
        return kind, key, client.post("/classify", **BAD[key][0])

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(send, sorted(jobs, key=lambda j: hash(j) % 97)))
    for kind, key, r in outcomes:
        if kind == "good":  # batched with other images: same ranking, scores equal to float precision
            assert r.status_code == 200
            got = r.json()["predictions"]
            assert [p["index"] for p in got] == [p["index"] for p in single[key]]
            assert [p["score"] for p in got] == pytest.approx([p["score"] for p in single[key]], abs=1e-5)
        else:
            assert r.status_code == BAD[key][1]
    assert client.get("/v2/health/ready").status_code == 200
