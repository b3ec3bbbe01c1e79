"""What the operations commands share: the settings, the store they open, and the checks that they never
create an empty database (``cds-service report``, ``purge``, ``db``, ``rules``)."""

from __future__ import annotations

import asyncio

import typer

from cds_service.store.base import StoreError


def _settings():
    from cds_service.cli import configured_settings

    return configured_settings()


def _missing_sqlite_file(settings):
    """The SQLite file the settings name when it does not exist yet (None for PostgreSQL or an existing file)."""
    from cds_service.store.engines import database_path

    if not settings.sqlalchemy_url.startswith("sqlite"):
        return None
    path = database_path(settings.sqlalchemy_url)
    return path if path is not None and not path.exists() else None


def _run(coro_fn, *, create: bool = False):
    """Open the store, run ``coro_fn(store)``, close; a store error is a one-line message and exit 1.

    Without ``create``, a SQLite file that does not exist is refused (one line, exit 1) and not created.
    """
    from cds_service.store import open_store

    settings = _settings()
    typer.echo(f"Database: {settings.database_label}", err=True)
    missing = _missing_sqlite_file(settings)
    if missing is not None and not create:
        typer.secho(f"Error: there is no audit database at {missing.resolve()}. Run this command where the "
                    "service runs, or set CDS_DATA_DIR or CDS_DATABASE_URL to the service's; "
                    "`cds-service db upgrade` creates an empty one.", fg="red", err=True)
        raise typer.Exit(1)

    async def main():
        store = open_store(settings)
        try:
            return await coro_fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        typer.secho(f"Error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


async def _require_tables(store) -> None:
    if await store.revision() is None:
        typer.secho("Error: the database has no audit tables (the service creates them on its first start; "
                    "`cds-service db upgrade` creates them now).", fg="red", err=True)
        raise typer.Exit(1)
