"""Fuzz image decoding and preprocessing: any bytes a client sends as an image.

Input: the encoded image. Checks decode_image, the decode budget's footprint of an opened image, and
decode_and_preprocess in every decode mode with the shipped digits model's preprocessing (read from models/)
and a ResNet-50-like one (3x224x224, ImageNet statistics).
"""
from __future__ import annotations

import asyncio  # noqa: F401  (the project's modules import it; it is not under test)
import json
import warnings
from pathlib import Path

import atheris
import numpy  # noqa: F401  (imported first so only Pillow and the project are instrumented)

from contract import expect_client_error, main
from serve.config import Limits

with atheris.instrument_imports():
    from PIL import Image

    Image.init()  # imports every format plugin now, so they are instrumented too
    from serve.runtime import preprocess

MODELS = Path(__file__).resolve().parent.parent / "models"
DIGITS = preprocess.Preprocessing.from_metadata(json.loads((MODELS / "seresnet20_digits/1/model.json").read_text()))
RESNET50 = preprocess.Preprocessing(channels=3, resize=256, crop=224, mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225), interpolation="bilinear")
MAX_PIXELS = Limits().max_pixels
warnings.simplefilter("ignore")  # Pillow warns about every corrupt header it still reads; findings are exceptions


def test_one_input(data: bytes) -> None:
    if expect_client_error(preprocess.decode_image, data, MAX_PIXELS) is None:
        return  # rejected as a client error: preprocessing would only reject it again
    for spec in (DIGITS, RESNET50):
        opened = expect_client_error(preprocess.open_image, data, MAX_PIXELS, spec)
        if opened is not None:
            expect_client_error(preprocess.decoding_footprint, opened, spec.channels)
        for decode in preprocess.DECODE_MODES:
            out = expect_client_error(preprocess.decode_and_preprocess, data, spec, MAX_PIXELS, decode)
            if out is not None and out.shape != spec.input_shape:
                raise AssertionError(f"preprocess gave {out.shape}, the model takes {spec.input_shape}")


if __name__ == "__main__":
    main(test_one_input)
