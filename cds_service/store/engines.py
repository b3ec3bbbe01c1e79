"""The SQLAlchemy engine for a database URL: SQLite (WAL, owner-only file) or PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cds_service.store.base import StoreError


def make_engine(url: str) -> AsyncEngine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return make_sqlite_engine(url)
    if backend == "postgresql":
        from cds_service.store.postgres import make_postgres_engine

        return make_postgres_engine(url)
    raise StoreError(f"Unsupported database '{backend}': use sqlite or postgresql (CDS_DATABASE_URL).")


PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000",
           "PRAGMA foreign_keys=ON")


def database_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for in-memory databases)."""
    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return Path(db)


def make_sqlite_engine(url: str) -> AsyncEngine:
    path = database_path(url)
    if path is not None:
        # CDS_DATA_DIR is created on first run. Owner-only: the file holds pseudonymous keys and free-text
        # comments; SQLite gives its -wal/-shm files the database file's permissions.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
