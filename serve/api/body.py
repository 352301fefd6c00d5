"""Read the images a client sent (raw body or multipart), within the configured limits."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from serve.config import HttpOptions, Limits
from serve.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

UNSUPPORTED_TYPES = ("image/svg+xml", "application/pdf", "text/html")


@dataclass(frozen=True)
class BodyPace:
    """How slowly a body may arrive. Without it a client that sends headers and then stalls holds one of the
    ingress's ongoing-request slots for good: the front door streams the body to the replica as it comes.

    The body must never pause longer than `idle_s`, and by any moment t seconds in it must have sent at least
    (t - grace_s) * min_rate bytes: one rule for trickles, stalls and the whole body's deadline.
    """

    idle_s: float
    grace_s: float
    min_rate: float  # bytes per second
    on_timeout: Callable[[], None] = lambda: None

    @classmethod
    def from_options(cls, http: HttpOptions, on_timeout: Callable[[], None] = lambda: None) -> "BodyPace":
        return cls(http.body_idle_timeout_s, http.body_timeout_s, http.body_min_rate_bytes_per_s, on_timeout)

    def wait_s(self, elapsed_s: float, received: int) -> float:
        """How long the next chunk may take to arrive; <= 0 means the body is already too late."""
        return min(self.idle_s, self.grace_s + received / self.min_rate - elapsed_s)


async def _paced(request: Request, pace: BodyPace | None):
    """The body's chunks as they arrive; RequestTimeout (408) as soon as the pace is broken."""
    chunks = request.stream().__aiter__()
    started, received = time.monotonic(), 0
    while True:
        wait_s = None if pace is None else pace.wait_s(time.monotonic() - started, received)
        try:
            if wait_s is not None and wait_s <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), wait_s)
        except StopAsyncIteration:
            return
        except ClientDisconnect:  # nobody reads the answer; a 4xx keeps it out of the 500s and their tracebacks
            raise BadRequest(f"the client went away after {received} bytes of its body") from None
        except asyncio.TimeoutError:
            pace.on_timeout()
            raise RequestTimeout(f"the body stopped or came too slowly: {received} bytes in "
                                 f"{time.monotonic() - started:.1f} s (at least {pace.min_rate:.0f} bytes/s after "
                                 f"{pace.grace_s:g} s, pauses under {pace.idle_s:g} s)") from None
        received += len(chunk)
        yield chunk


async def read_body(request: Request, max_bytes: int, pace: BodyPace | None = None) -> bytes:
    """Refuse by Content-Length before reading; otherwise stop reading as soon as the limit is passed, or as
    soon as the client falls behind `pace` (408)."""
    declared = request.headers.get("content-length")
    # isdigit() is also true of digits int() refuses, such as superscripts: isascii() keeps them out.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in _paced(request, pace):
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


async def read_images(request: Request, limits: Limits, pace: BodyPace | None = None) -> list[bytes]:
    """The encoded images of a request, in order; content types are checked but bytes decide."""
    body = await read_body(request, limits.max_body_bytes, pace)
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
