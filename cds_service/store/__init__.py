"""Audit and feedback store. Pick an implementation with :func:`open_store`.

* :class:`~cds_service.store.base.Store` is the interface the rest of the service uses.
* :class:`~cds_service.store.sql.SqlStore` implements it with SQLAlchemy 2 async Core for PostgreSQL (and
  in-memory SQLite); :class:`~cds_service.store.sqlite.SqliteStore`, the embedded default, runs the same
  statements with every write on one thread that owns one connection. The engines are built by
  :func:`~cds_service.store.engines.make_engine`.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from cds_service.store.base import CallRow, CardRow, FeedbackRow, RuleReport, RuleVersionRow, Store, StoreError
from cds_service.store.engines import database_path, make_engine

__all__ = ["CallRow", "CardRow", "FeedbackRow", "RuleReport", "RuleVersionRow", "Store", "StoreError", "make_engine",
           "open_store"]


def open_store(url_or_settings) -> Store:
    """A store for a SQLAlchemy URL or a :class:`~cds_service.config.Settings` (its ``sqlalchemy_url``)."""
    from cds_service.store.sql import SqlStore
    from cds_service.store.sqlite import SqliteStore

    url = url_or_settings if isinstance(url_or_settings, str) else url_or_settings.sqlalchemy_url
    if make_url(url).get_backend_name() == "sqlite" and database_path(url) is not None:
        return SqliteStore(url)
    return SqlStore(url)
