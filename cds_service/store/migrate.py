"""Run the packaged Alembic migrations programmatically (no alembic.ini at the repository root).

The service upgrades at startup and ``cds-service db upgrade`` does the same. Several processes may
start at once (``--workers N``, N instances on one PostgreSQL), so the upgrade is serialised: a
transaction-scoped advisory lock on PostgreSQL, a file lock beside the database file on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Arbitrary but fixed: every instance must take the same advisory lock.
PG_LOCK_KEY = 0x4E53_4344_5301


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.asynccontextmanager
async def _file_lock(path: Path | None):
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; a single process is the only supported setup there
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_path(engine: AsyncEngine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    from cds_service.store.sqlite import database_path

    db = database_path(engine.url.render_as_string(hide_password=False))
    return db.with_name(db.name + ".migrate.lock") if db else None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def _run(sync_conn) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with _file_lock(_lock_path(engine)):
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            await conn.run_sync(_run)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def autogenerate(engine: AsyncEngine, message: str) -> None:
    """For developers: write a new migration from the difference between schema.py and the database."""

    def _run(sync_conn) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.revision(cfg, message=message, autogenerate=True)

    async with engine.begin() as conn:
        await conn.run_sync(_run)
