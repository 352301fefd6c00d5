"""Write the committed seed corpus (fuzz/corpus/<target>/): small valid inputs of every kind each parser reads.

Run `python fuzz/seeds.py` to rebuild it; every seed stays a few hundred bytes, so the corpus stays well under 1 MB.
"""
from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS = Path(__file__).resolve().parent / "corpus"


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    gray = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees on display
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    jpeg = encode(rgb, "JPEG", quality=80)
    png = encode(rgb, "PNG")
    return {
        "rgb.png": png,
        "gray.png": encode(gray, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "palette_transparent.png": encode(palette, "PNG", transparency=0),
        "gray16.png": encode(Image.fromarray((np.arange(48).reshape(6, 8) * 1000).astype(np.uint16)), "PNG"),
        "rgb.jpg": jpeg,
        "gray.jpg": encode(gray, "JPEG"),
        "progressive.jpg": encode(rgb, "JPEG", progressive=True),
        "exif_rotated.jpg": encode(rgb, "JPEG", exif=exif.tobytes()),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "two_frames.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rgb.webp": encode(rgb, "WEBP", quality=50),
        "lossless.webp": encode(rgba, "WEBP", lossless=True),
        "rgb.bmp": encode(rgb, "BMP"),
        "rgb.tiff": encode(rgb, "TIFF"),
        "float.tiff": encode(Image.fromarray(rng.random((6, 8), dtype=np.float32) * 300, "F"), "TIFF"),
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
    }


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "fuzzb") -> bytes:
    out = b""
    for name, content_type, data in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n"
                f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def bodies(imgs: dict[str, bytes]) -> dict[str, bytes]:
    """fuzz_body.py's layout: control byte (chunk size, Content-Length mode), content type, newline, body."""
    png, jpeg = imgs["rgb.png"], imgs["rgb.jpg"]
    form = "multipart/form-data; boundary=fuzzb"
    two = multipart([("file", "image/png", png), ("file", "image/jpeg", jpeg)])
    return {
        "raw_png": b"\x0f" + b"image/png\n" + png,
        "raw_jpeg_length": b"\x47" + b"image/jpeg\n" + jpeg,
        "raw_declared_length": b"\x83" + b"application/octet-stream\n" + png + b"\r\r" + str(len(png)).encode(),
        "svg": b"\x00" + b"image/svg+xml\n" + b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "multipart_one": b"\x07" + form.encode() + b"\n" + multipart([("file", "image/png", png)]),
        "multipart_two": b"\x45" + form.encode() + b"\n" + two,
        "multipart_other_field": b"\x03" + form.encode() + b"\n" + multipart([("note", "text/plain", b"hi")]),
        "multipart_quoted_boundary": b"\x20" + b'multipart/form-data; boundary="fuzzb"; charset=utf-8\n' + two,
    }


def oip_requests() -> dict[str, bytes]:
    """fuzz_oip.py's layout: Inference-Header-Content-Length (empty: absent), newline, body."""
    tensor = np.zeros((1, 1, 32, 32), np.float32)
    json_tensor = {"id": "a", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                          "data": tensor.ravel().tolist()}],
                   "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}
    image = images()["gray.png"]
    json_images = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                               "data": [base64.b64encode(image).decode()]}]}
    raw_tensor = tensor.tobytes()
    binary_tensor = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                            "parameters": {"binary_data_size": len(raw_tensor)}}]}).encode()
    raw_images = struct.pack("<I", len(image)) + image
    binary_images = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                            "parameters": {"binary_data_size": len(raw_images)}}],
                                "outputs": [{"name": "probabilities"}]}).encode()
    return {
        "json_tensor": b"\n" + json.dumps(json_tensor).encode(),
        "json_images": b"\n" + json.dumps(json_images).encode(),
        "binary_tensor": str(len(binary_tensor)).encode() + b"\n" + binary_tensor + raw_tensor,
        "binary_images": str(len(binary_images)).encode() + b"\n" + binary_images + raw_images,
    }


def feedbacks() -> dict[str, bytes]:
    return {name: json.dumps(body).encode() for name, body in {
        "name": {"request_id": "0123abcd", "label": "7"},
        "index_image": {"request_id": "0123abcd", "label": 3, "image": 1},
        "out_of_range": {"request_id": "r", "label": 10},
        "unknown_field": {"request_id": "r", "label": "1", "extra": None},
    }.items()}


def queries() -> dict[str, bytes]:
    """fuzz_query.py's layout: k, newline, model name."""
    return {
        "default": b"\n",
        "k_name": b"3\nseresnet20_digits",
        "k_versioned": b"10\nresnext20_digits/1",
        "bad_k": b"-1\nunknown",
        "big_k": b"99999999999999999999\nseresnet20_digits/2",
    }


def write(target: str, seeds: dict[str, bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (folder / name).write_bytes(data)


def main() -> None:
    imgs = images()
    write("image", imgs)
    write("body", bodies(imgs))
    write("oip", oip_requests())
    write("feedback", feedbacks())
    write("query", queries())
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"seed corpus: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
