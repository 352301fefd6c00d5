"""Read the images a client sent (raw body or multipart), within the configured limits."""
from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from serve.config import Limits
from serve.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

UNSUPPORTED_TYPES = ("image/svg+xml", "application/pdf", "text/html")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Refuse by Content-Length before reading; otherwise stop reading as soon as the limit is passed."""
    declared = request.headers.get("content-length")
    # isdigit() is also true of digits int() refuses, such as superscripts: isascii() keeps them out.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def looks_like_svg(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def _check_type(content_type: str, data: bytes) -> None:
    media = content_type.split(";")[0].strip().lower()
    if media in UNSUPPORTED_TYPES or looks_like_svg(data):
        raise UnsupportedMediaType(f"unsupported image type {media or 'svg'}: send JPEG, PNG, WebP, BMP, GIF or TIFF")


async def read_images(request: Request, limits: Limits) -> list[bytes]:
    """The encoded images of a request, in order; content types are checked but bytes decide."""
    body = await read_body(request, limits.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/"):
        _check_type(content_type, body)
        return [body]

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        # Parts are already bounded by the body limit; counting them ourselves gives the clearer error.
        form = await Request(request.scope, replay).form(max_files=10_000, max_part_size=limits.max_body_bytes)
    except Exception as exc:  # malformed multipart is the client's error
        raise BadRequest(f"cannot parse multipart body: {exc}") from None
    files = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
    if not files:
        raise BadRequest("multipart request has no 'file' part holding an image")
    if len(files) > limits.max_images_per_request:
        raise PayloadTooLarge(f"{len(files)} images in one request; the limit is {limits.max_images_per_request}")
    images = []
    for part in files:
        data = await part.read()
        _check_type(part.content_type or "", data)
        images.append(data)
    return images
