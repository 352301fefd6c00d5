"""Fuzz reading request bodies: raw images and multipart forms, through a real starlette Request.

Input: `<control><content-type>\\n<body>`. The control byte picks the chunk size the body arrives in
(1-64 bytes) and what Content-Length says (absent, true, or the fuzzed text after the body's `\\r\\r`).
"""
from __future__ import annotations

import asyncio

import atheris
import starlette.datastructures  # noqa: F401  (imported first: what is instrumented below is the parsing)

from contract import expect_client_error, main, split_line
from serve.config import Limits

with atheris.instrument_imports():
    import python_multipart  # noqa: F401  (the multipart parser starlette's form parser drives)
    from starlette import formparsers, requests  # noqa: F401

    from serve.api import body as body_module

# Small limits so fuzzed inputs reach both sides of every limit.
LIMITS = Limits(max_body_bytes=2048, max_images_per_request=3)
LOOP = asyncio.new_event_loop()


def build_request(content_type: bytes, content_length: bytes | None, chunks: list[bytes]) -> requests.Request:
    headers = [(b"content-type", content_type)]
    if content_length is not None:
        headers.append((b"content-length", content_length))
    scope = {"type": "http", "method": "POST", "path": "/classify", "raw_path": b"/classify",
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234), "root_path": ""}
    pending = list(chunks)

    async def receive() -> dict:
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    return requests.Request(scope, receive)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    control, rest = data[0], data[1:]
    content_type, body = split_line(rest)
    size = control % 64 + 1
    chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    mode = control // 64
    if mode == 0:
        content_length = None
    elif mode == 1:
        content_length = str(len(body)).encode()
    else:  # whatever the client wrote: the text after the last \r\r, or none
        body, _, declared = body.rpartition(b"\r\r")
        content_length = declared if body else None
        chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    request = build_request(content_type, content_length, chunks)
    images = expect_client_error(LOOP.run_until_complete, body_module.read_images(request, LIMITS))
    if images is not None and (not images or len(images) > LIMITS.max_images_per_request):
        raise AssertionError(f"read_images returned {len(images)} images")


if __name__ == "__main__":
    main(test_one_input)
