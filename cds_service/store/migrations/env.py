"""Alembic environment, shipped inside the package so ``pip install .`` carries the migrations.

The service runs it programmatically (:func:`cds_service.store.migrate.upgrade`) and hands over an open
connection in ``config.attributes["connection"]``; ``cds-service db revision -m "..."`` autogenerates a new
migration the same way. Without a connection (plain ``alembic`` with a hand-written ini) the URL comes from
``sqlalchemy.url`` or the service settings (``CDS_DATABASE_URL`` / ``CDS_DATA_DIR``).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from cds_service.store.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from cds_service.config import get_settings
    from cds_service.store.engines import make_engine

    async def _run() -> None:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url)
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync_conn: (_configure(sync_conn), context.run_migrations()))
        await engine.dispose()

    asyncio.run(_run())


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
