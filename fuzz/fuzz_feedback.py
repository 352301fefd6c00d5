"""Fuzz POST /feedback bodies: parse_feedback, then label_index against the digits model's labels."""
from __future__ import annotations

import atheris

from contract import expect_client_error, main

with atheris.instrument_imports():
    from serve.ab import feedback

LABELS = [str(i) for i in range(10)]


def test_one_input(data: bytes) -> None:
    parsed = expect_client_error(feedback.parse_feedback, data)
    if parsed is not None:
        index = expect_client_error(feedback.label_index, parsed.label, LABELS)
        if index is not None and not 0 <= index < len(LABELS):
            raise AssertionError(f"label_index gave {index} for {len(LABELS)} labels")


if __name__ == "__main__":
    main(test_one_input)
