"""Fuzz query and path parameters: `k` (parse_k) and model names resolved by a ModelCatalog over models/.

Input: `<k>\\n<model>`; the model text is also tried as `name/version` halves and as a model listing.
"""
from __future__ import annotations

import asyncio  # noqa: F401  (the project's modules import it; it is not under test)
from pathlib import Path

import atheris
import numpy  # noqa: F401  (imported first so only the project is instrumented)
import PIL.Image  # noqa: F401

from contract import expect_client_error, main, split_line

with atheris.instrument_imports():
    from serve.runtime import catalog, postprocess
    from serve.runtime import repository  # noqa: F401  (instrumented: resolve sorts versions with it)

MODELS = Path(__file__).resolve().parent.parent / "models"
CATALOG = catalog.ModelCatalog(MODELS, [f"{p.parent.name}/{p.name}" for p in sorted(MODELS.glob("*/*"))])


def text(raw: bytes) -> str:
    """Query strings and paths reach the app percent-decoded as UTF-8, with replacement characters."""
    return raw.decode("utf-8", "replace")


def test_one_input(data: bytes) -> None:
    k, model = (text(part) for part in split_line(data))
    for num_classes in (1, 10, 1000):
        value = expect_client_error(postprocess.parse_k, k, num_classes)
        if value is not None and not 1 <= value <= num_classes:
            raise AssertionError(f"parse_k({k!r}) gave {value} for {num_classes} classes")
    artifact = expect_client_error(CATALOG.resolve, model or None)
    if artifact is not None and artifact not in CATALOG.artifacts.values():
        raise AssertionError(f"resolve({model!r}) gave a model the catalog does not hold")
    name, _, version = model.partition("/")
    expect_client_error(CATALOG.resolve_versioned, name, version or None)
    expect_client_error(CATALOG.model, model)


if __name__ == "__main__":
    main(test_one_input)
