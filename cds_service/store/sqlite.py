"""SQLite (the embedded default): WAL journal, one file in ``CDS_DATA_DIR``, one writer thread per process.

WAL with ``synchronous=NORMAL`` commits in ~30 µs and stays consistent after a crash; a power cut can lose
the last commits, acceptable for an audit trail. ``busy_timeout`` lets several
worker processes (``--workers N``) share the file: a writer waits for the lock instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from cds_service.store.base import CallRow, CardRow, FeedbackRow, StoreError, dedupe_feedback
from cds_service.store.engines import sqlite_pragmas
from cds_service.store.schema import feedback, rule_versions
from cds_service.store.sql import SqlStore, _safe_message, purge_statements


class SqliteStore(SqlStore):
    """The embedded store: every write goes through one thread that owns one connection.

    Writers in one process never compete for SQLite's single write lock (only other processes sharing
    the file, which ``busy_timeout`` serialises), and a write, once the thread has started it, always
    runs to its COMMIT or ROLLBACK whatever happens to the coroutine that asked for it: cancelling the
    caller (a client timeout) only stops the waiting. Reads, reports and migrations use the async engine
    (WAL readers never block the writer).
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cds-sqlite-writer")
        self._sync_engine: Engine | None = None

    def _writer_engine(self) -> Engine:  # in the writer thread only
        if self._sync_engine is None:
            sync_url = make_url(self.url).set(drivername="sqlite")
            engine = create_engine(sync_url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", sqlite_pragmas)
            self._sync_engine = engine
        return self._sync_engine

    async def _in_writer(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the executor was shut down (close() ran)
            raise StoreError("the store is closed") from exc

    def _execute_many_sync(self, sql: str, params: list[tuple], what: str) -> int:
        try:
            with self._writer_engine().begin() as conn:
                return max(conn.exec_driver_sql(sql, params).rowcount, 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"{what} failed ({_safe_message(exc)})") from exc

    def _execute_all_sync(self, statements: list[tuple[str, list[tuple]]]) -> int:
        try:
            with self._writer_engine().begin() as conn:
                return sum(max(conn.exec_driver_sql(sql, params).rowcount, 0) for sql, params in statements)
        except SQLAlchemyError as exc:
            raise StoreError(f"writing the audit batch failed ({_safe_message(exc)})") from exc

    def _insert_rule_versions_sync(self, values: list[dict]) -> int:
        stmt = self._insert(rule_versions).returning(rule_versions.c.rule_id)
        try:
            with self._writer_engine().begin() as conn:
                return len(conn.execute(stmt, values).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"writing rule versions failed ({_safe_message(exc)})") from exc

    def _insert_feedback_sync(self, values: list[dict]) -> int:
        stmt = self._insert(feedback).returning(feedback.c.id)
        try:
            with self._writer_engine().begin() as conn:
                return len(conn.execute(stmt, values).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"writing feedback failed ({_safe_message(exc)})") from exc

    def _purge_sync(self, before) -> int:
        try:
            with self._writer_engine().begin() as conn:
                return purge_statements(conn, before)
        except SQLAlchemyError as exc:
            raise StoreError(f"purging failed ({_safe_message(exc)})") from exc

    async def record_cards(self, rows: Sequence[CardRow]) -> int:
        if not rows:
            return 0
        sql, params = self.card_params(rows)
        return await self._in_writer(self._execute_many_sync, sql, params, "writing cards")

    async def record_calls(self, rows: Sequence[CallRow]) -> int:
        if not rows:
            return 0
        sql, params = self.call_params(rows)
        return await self._in_writer(self._execute_many_sync, sql, params, "writing hook calls")

    async def record_audit(self, rows: Sequence[CardRow | CallRow]) -> int:
        statements = self.audit_statements(rows)
        if not statements:
            return 0
        return await self._in_writer(self._execute_all_sync, statements)

    async def _insert_rule_versions(self, values: list[dict]) -> int:
        return await self._in_writer(self._insert_rule_versions_sync, values)

    async def record_feedback(self, items: Sequence[FeedbackRow]) -> int:
        items = dedupe_feedback(items)
        if not items:
            return 0
        return await self._in_writer(self._insert_feedback_sync, self.feedback_values(items))

    async def purge(self, before) -> int:
        return await self._in_writer(self._purge_sync, before)

    async def close(self) -> None:
        def dispose() -> None:
            if self._sync_engine is not None:
                self._sync_engine.dispose()

        try:
            await self._in_writer(dispose)
        except StoreError:
            pass
        # Waits for a write in progress: it finishes (COMMIT or ROLLBACK) before the connection closes.
        await asyncio.to_thread(self._executor.shutdown, True)
        await super().close()
