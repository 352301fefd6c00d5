"""Connecting to the feedback database named by a URL, and bringing its schema to the current revision.

SQLite (one file per node, `make serve`'s default) or PostgreSQL (shared by every replica, survives pods).
SQLAlchemy's pool owns the connections; pre-ping replaces the ones a restarted database dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# Any constant works as long as every replica uses the same one: it serialises concurrent migrations.
MIGRATION_LOCK = 0x5265_7346_616D  # "ResFam"
CONNECT_TIMEOUT_S = 3  # a database that is down fails fast instead of holding a worker thread
SQLITE_BUSY_TIMEOUT_S = 10


def store_url(target: str | Path) -> URL:
    """`postgresql://` is taken as psycopg 3; a plain path means a SQLite file."""
    if isinstance(target, Path) or "://" not in target:
        return URL.create("sqlite", database=str(target))
    url = make_url(target)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            raise ValueError("the feedback store needs a SQLite file (sqlite:///<path>), not an in-memory database")
        return url
    raise ValueError(f"unsupported feedback store URL scheme {url.drivername!r}: use sqlite:///<path> or "
                     "postgresql://user@host:port/dbname")


def create_store_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=CONNECT_TIMEOUT_S,
                         pool_recycle=1800, connect_args=connect_args)


def _sqlite_engine(url: URL) -> Engine:
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True,
                           connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    # pysqlite opens transactions only before DML and never around DDL; take over so that a migration and a
    # batch are each one real transaction (SQLAlchemy's documented recipe). WAL lets readers run beside a writer.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: two replicas migrating one file queue instead of failing
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("write") else "BEGIN")

    return engine


def migrate(engine: Engine) -> None:
    """Upgrade to the newest revision in one transaction; several replicas starting at once take turns."""
    with engine.connect().execution_options(write=True) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = Config()
        config.set_main_option("script_location", "serve.ab:migrations")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_transient(exc: BaseException) -> bool:
    """The database is down, restarting, unreachable or busy: worth retrying, unlike a bad statement."""
    return isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout))
