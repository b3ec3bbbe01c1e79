"""Run the packaged Alembic migrations programmatically (no alembic.ini at the repository root).

The service upgrades at startup and ``cds-service db upgrade`` does the same. Several processes may
start at once (``--workers N``, N instances on one PostgreSQL), so the upgrade is serialised: a
transaction-scoped advisory lock on PostgreSQL, a file lock beside the database file on SQLite. Within
one process, Alembic keeps the running migration's environment in module globals (``alembic.context``),
so two migrations at once, even of two different databases, would run against each other's connection:
they take turns (:func:`_one_at_a_time`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions (tests/test_store.py checks it against Alembic's view).
# Start-up compares the database with it and imports Alembic (~0.2 s) only when there is work to do.
HEAD = "0002"
# Arbitrary but fixed: every instance must take the same advisory lock.
PG_LOCK_KEY = 0x4E53_4344_5301
_ALEMBIC = threading.Lock()  # one Alembic command at a time in this process (event loops and threads alike)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.asynccontextmanager
async def _one_at_a_time():
    """Hold the process-wide Alembic lock; waited for in a thread, so the event loop (and a migration
    running on it) goes on meanwhile. A caller cancelled while waiting releases the lock once it is taken."""
    waiting = asyncio.ensure_future(asyncio.to_thread(_ALEMBIC.acquire))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        waiting.add_done_callback(lambda f: _ALEMBIC.release() if not f.cancelled() and f.result() else None)
        raise
    try:
        yield
    finally:
        _ALEMBIC.release()


@contextlib.asynccontextmanager
async def _file_lock(path: Path | None):
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; a single process is the only supported setup there
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_path(engine: AsyncEngine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    from cds_service.store.engines import database_path

    db = database_path(engine.url.render_as_string(hide_password=False))
    return db.with_name(db.name + ".migrate.lock") if db else None


async def _at_head(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    except Exception:  # noqa: BLE001 - no table yet (new database) or any doubt: let Alembic decide
        return False
    return row is not None and row[0] == HEAD


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if revision == "head" and await _at_head(engine):
        return

    def _run(sync_conn) -> None:
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with _one_at_a_time(), _file_lock(_lock_path(engine)):
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            await conn.run_sync(_run)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        from alembic.runtime.migration import MigrationContext

        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def autogenerate(engine: AsyncEngine, message: str) -> None:
    """For developers: write a new migration from the difference between schema.py and the database."""

    def _run(sync_conn) -> None:
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.revision(cfg, message=message, autogenerate=True)

    async with _one_at_a_time(), engine.begin() as conn:
        await conn.run_sync(_run)
