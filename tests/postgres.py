"""A real PostgreSQL (Debian's package, loadtests/postgres.py) for tests: one throw-away cluster per test session.

Debian's server refuses to run as root, so as root the cluster belongs to the `postgres` user (runuser);
it listens on 127.0.0.1 on a free port, with its socket in its own directory. Without the binaries the tests
that need it skip and say why, unless RESFAM_REQUIRE_POSTGRES is set (CI), where they fail instead.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from loadtests.postgres import MISSING, PostgresServer, postgres_bindir, temporary_postgres

__all__ = ["PostgresServer", "postgres_server", "postgres_database"]
REQUIRE_ENV = "RESFAM_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{MISSING}, and {REQUIRE_ENV} is set")
        pytest.skip(MISSING)
    with temporary_postgres(bindir) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_database(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test module's own; tests empty it with `postgres_server.empty`."""
    name = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()
    url = postgres_server.fresh_database(name)
    yield url
    postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
