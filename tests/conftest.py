"""The live server: started once per test session as a user would start it, spoken to over real HTTP."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

from loadtests.server import ROOT, LiveServer, default_config, free_port  # noqa: F401 (re-exported for tests)


# Requests that name no model go through the shipped A/B experiment: one sticky user keeps them on one arm.
TEST_USER = {"X-User-Id": "test-suite"}


@contextmanager
def shipped_server(tmp_path_factory, name: str) -> Iterator[LiveServer]:
    """A server with the shipped config, its own port, folder and feedback store."""
    workdir = tmp_path_factory.mktemp(name)
    live = LiveServer(default_config(free_port()), workdir)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    with shipped_server(tmp_path_factory, "server") as live:
        yield live


def client_for(live: LiveServer, headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60, headers=headers) as c:
        yield c


@pytest.fixture(scope="session")
def client(server: LiveServer) -> httpx.Client:
    yield from client_for(server, TEST_USER)
