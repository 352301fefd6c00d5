"""Fuzz the Open Inference Protocol (KServe V2) infer request: JSON and the binary tensor extension.

Input: `<Inference-Header-Content-Length>\\n<body>`; an empty first line means the header is absent.
The model is the shipped digits model's input shape (1x32x32, 10 classes).
"""
from __future__ import annotations

import atheris
import numpy  # noqa: F401  (imported first so only the project is instrumented)
import serve.runtime.repository  # noqa: F401  (and Pillow, which it brings, is not)

from contract import expect_client_error, main, split_line

with atheris.instrument_imports():
    from serve.api import oip

INPUT_SHAPE, NUM_CLASSES = (1, 32, 32), 10


def test_one_input(data: bytes) -> None:
    header, body = split_line(data)
    header_length = header.decode("latin-1") if header else None
    parsed = expect_client_error(oip.parse_infer_request, body, header_length, INPUT_SHAPE, NUM_CLASSES)
    if parsed is not None and (parsed.tensor is None) == (parsed.images is None):
        raise AssertionError("a parsed request holds exactly one of a tensor and images")


if __name__ == "__main__":
    main(test_one_input)
