"""The live server: started once per test session as a user would start it, spoken to over real HTTP."""
from __future__ import annotations

import httpx
import pytest

from loadtests.server import ROOT, LiveServer, default_config, free_port  # noqa: F401 (re-exported for tests)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    live = LiveServer(default_config(free_port()), tmp_path_factory.mktemp("server"))
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
