"""Audit and feedback store. Pick an implementation with :func:`open_store`.

* :class:`~cds_service.store.base.Store` is the interface the rest of the service uses.
* :class:`~cds_service.store.sql.SqlStore` implements it with SQLAlchemy 2 async Core for PostgreSQL (and
  in-memory SQLite); :class:`~cds_service.store.sqlite.SqliteStore`, the embedded default, runs the same
  statements with every write on one thread that owns one connection. The engines are built by
  :func:`~cds_service.store.engines.make_engine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cds_service.store.base import CallRow, CardRow, FeedbackRow, RuleReport, RuleVersionRow, Store, StoreError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# SQLAlchemy is imported by the functions that need it, not with this package: the service answers its
# first hook call before the audit store is opened (cds_service.store.deferred), and the import is most of
# that opening's cost.
__all__ = ["CallRow", "CardRow", "FeedbackRow", "RuleReport", "RuleVersionRow", "Store", "StoreError",
           "make_engine", "open_store"]


def make_engine(url: str) -> AsyncEngine:
    from cds_service.store.engines import make_engine as make

    return make(url)


def open_store(url_or_settings) -> Store:
    """A store for a SQLAlchemy URL or a :class:`~cds_service.config.Settings` (its ``sqlalchemy_url``)."""
    from sqlalchemy.engine import make_url

    from cds_service.store.engines import database_path
    from cds_service.store.sql import SqlStore
    from cds_service.store.sqlite import SqliteStore

    url = url_or_settings if isinstance(url_or_settings, str) else url_or_settings.sqlalchemy_url
    if make_url(url).get_backend_name() == "sqlite" and database_path(url) is not None:
        return SqliteStore(url)
    return SqlStore(url)
