"""PostgreSQL engine (several instances share one database): psycopg 3, async.

psycopg 3: one driver serves the async service and the sync Alembic/CLI paths. A plain ``postgresql://``
URL is mapped to it by ``Settings.sqlalchemy_url``; libpq parameters in the query string pass through, e.g.
``?sslmode=require`` or ``?options=-csearch_path%3Dcds`` to keep the tables in their own schema.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_postgres_engine(url: str) -> AsyncEngine:
    # Each process needs one connection for the audit writer and a few for feedback and reports; a
    # small pool keeps N instances x M workers well under max_connections. pre_ping recovers from
    # connections cut by a database restart or failover.
    # Timeouts bound acquiring (pool_timeout, connect_timeout), never a transaction in progress; a server
    # that vanishes without closing its sockets is noticed by TCP keepalives and tcp_user_timeout (unsent
    # data unacknowledged for 15 s), so a write cannot hang forever either.
    return create_async_engine(url, pool_size=3, max_overflow=5, pool_pre_ping=True, pool_recycle=1800,
                               pool_timeout=5, connect_args=CONNECT_ARGS)


CONNECT_ARGS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                "keepalives_count": 3, "tcp_user_timeout": 15_000}
