"""A real, throw-away PostgreSQL (Debian's package) for the test suite and the load scenarios.

Debian's server refuses to run as root, so as root the cluster belongs to the `postgres` user (runuser);
it listens on 127.0.0.1 on a free port, with its socket in its own directory.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from loadtests.server import free_port

MISSING = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
OWNER = "postgres"


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin; take the newest."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """`fsync=False` suits tests (nothing to keep); measurements of commit costs need it on, as in production."""

    def __init__(self, bindir: Path, root: Path, fsync: bool = False) -> None:
        self.bindir, self.root, self.port, self.fsync = bindir, root, free_port(), fsync
        self.data = root / "data"

    def _run(self, *command: str) -> None:
        as_owner = ["runuser", "-u", OWNER, "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_owner, str(self.bindir / command[0]), *command[1:]], check=True,
                       capture_output=True, text=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'}"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str, database: str = "postgres") -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={database}",
                             autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)

    def fresh_database(self, name: str) -> str:
        """An empty database called `name` (dropped first if it exists); returns its URL."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        return self.url(name)

    def empty(self, database: str) -> None:
        """Back to an empty database: tables, indexes and the schema version go."""
        self.admin("DROP SCHEMA public CASCADE", "CREATE SCHEMA public", database=database)


@contextlib.contextmanager
def temporary_postgres(bindir: Path | None = None, fsync: bool = False) -> Iterator[PostgresServer]:
    """A running cluster in a directory of its own, stopped and removed afterwards."""
    bindir = bindir or postgres_bindir()
    if bindir is None:
        raise RuntimeError(MISSING)
    root = Path(tempfile.mkdtemp(prefix="resfam-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, OWNER, OWNER)
    server = PostgresServer(bindir, root, fsync)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()  # never started, or a test left it stopped
        shutil.rmtree(root, ignore_errors=True)
