"""The one contract every fuzz target checks, and the libFuzzer entry point they share.

For any bytes a client can send, a parser returns or raises serve.errors.ApiError with a 4xx status:
anything else (another exception, a 5xx ApiError) would reach the client as a 500 and is a finding.
Time and memory bounds are libFuzzer's `-timeout` and `-rss_limit_mb`, passed on the command line.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import atheris

from serve.errors import ApiError


class ContractViolation(AssertionError):
    """A parser answered untrusted input with a server error."""


def expect_client_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `call`; a 4xx ApiError is a fine answer (None is returned), a 5xx one is a finding."""
    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        if not 400 <= exc.status < 500:
            raise ContractViolation(f"{type(exc).__name__} with status {exc.status}: {exc.message}") from exc
        return None


def split_line(data: bytes) -> tuple[bytes, bytes]:
    """Targets take `<header line>\\n<body>`: seeds stay readable and mutations reach both parts."""
    head, _, body = data.partition(b"\n")
    return head, body


def main(test_one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
