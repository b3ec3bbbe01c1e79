"""The SQL implementation of :class:`~cds_service.store.base.Store`, shared by SQLite and PostgreSQL.

Writes are batched in one transaction and use ``ON CONFLICT DO NOTHING`` (``INSERT OR IGNORE`` on SQLite):
a batch of 100 costs about as much as one row and repeats are skipped by the
database itself, so several instances can never double count. Feedback uses a multi-row
``INSERT ... RETURNING`` (how many rows were new); card rows, the hot write, a driver-level executemany.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cds_service.store import migrate
from cds_service.store.base import (
    NO_REASON,
    UNKNOWN_RULE,
    CallRow,
    CardRow,
    FeedbackRow,
    RuleReport,
    RuleVersionRow,
    Store,
    StoreError,
    dedupe_feedback,
    run_to_end,
)
from cds_service.store.engines import make_engine
from cds_service.store.schema import cards, feedback, hook_calls, rule_versions
from cds_service.store.text import db_text

# Free text from the EHR: the longest comment accepted (longer ones are refused with a 400 when read).
MAX_COMMENT = 2000


def _safe_message(exc: Exception) -> str:
    """The driver's first line only: SQLAlchemy's full text carries the SQL parameters (comments...)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = (str(exc.orig).strip().splitlines() or [""])[0]
        return f"{type(exc.orig).__name__}: {first[:200]}"
    return type(exc).__name__


def purge_statements(conn: sa.Connection, before: datetime) -> int:
    """Delete what is older than ``before`` inside the caller's transaction; returns rows deleted."""
    old_cards = sa.select(cards.c.card_uuid).where(cards.c.issued_at < before)
    # Feedback goes with its card, so a purge never turns old feedback into "unknown" rows.
    n = conn.execute(sa.delete(feedback).where(
        sa.or_(feedback.c.received_at < before, feedback.c.card_uuid.in_(old_cards)))).rowcount
    n += conn.execute(sa.delete(cards).where(cards.c.issued_at < before)).rowcount
    n += conn.execute(sa.delete(hook_calls).where(hook_calls.c.called_at < before)).rowcount
    return n


def _bound(procs: Sequence, rows: list[tuple]) -> list[tuple]:
    """``rows`` with each value passed through its column's bind processor (``procs``, None where a column
    has none), each distinct value of a column converted once per batch.

    The rows of one hook call share their time, and a batch holds few distinct flags and durations:
    converting a time (UTC, then text on SQLite) once per call instead of once per card is most of what
    building an audit batch costs the event loop, which the writer shares with the hook calls."""
    columns = [(i, proc, {}) for i, proc in enumerate(procs) if proc is not None]
    if not columns:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i, proc, seen in columns:
            value = values[i]
            try:
                values[i] = seen[value]
            except KeyError:
                values[i] = seen[value] = proc(value)
        out.append(tuple(values))
    return out


class SqlStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def _insert(self, table: sa.Table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    # ------------------------------------------------------------------ writes
    # Every write runs to its end once started: the caller may stop waiting (a client timeout, a
    # cancelled request), but the transaction is never cancelled half-way, so a connection is never
    # handed back to the pool inside an open transaction holding the database's write lock.
    async def record_cards(self, rows: Sequence[CardRow]) -> int:
        if not rows:
            return 0
        sql, params = self.card_params(rows)
        return await run_to_end(self._execute_many(sql, params, "writing cards"))

    async def _execute_many(self, sql: str, params: list[tuple], what: str) -> int:
        try:
            async with self.engine.begin() as conn:
                result = await conn.exec_driver_sql(sql, params)
                return max(result.rowcount, 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"{what} failed ({_safe_message(exc)})") from exc

    async def record_calls(self, rows: Sequence[CallRow]) -> int:
        if not rows:
            return 0
        sql, params = self.call_params(rows)
        return await run_to_end(self._execute_many(sql, params, "writing hook calls"))

    async def record_audit(self, rows: Sequence[CardRow | CallRow]) -> int:
        """Card and call rows of a batch in one transaction (one commit, as cheap as the cards alone)."""
        statements = self.audit_statements(rows)
        if not statements:
            return 0
        return await run_to_end(self._execute_all(statements))

    async def _execute_all(self, statements: list[tuple[str, list[tuple]]]) -> int:
        try:
            async with self.engine.begin() as conn:
                added = 0
                for sql, params in statements:
                    added += max((await conn.exec_driver_sql(sql, params)).rowcount, 0)
                return added
        except SQLAlchemyError as exc:
            raise StoreError(f"writing the audit batch failed ({_safe_message(exc)})") from exc

    def audit_statements(self, rows: Sequence[CardRow | CallRow]) -> list[tuple[str, list[tuple]]]:
        card_rows = [r for r in rows if isinstance(r, CardRow)]
        call_rows = [r for r in rows if isinstance(r, CallRow)]
        statements = []
        if card_rows:
            statements.append(self.card_params(card_rows))
        if call_rows:
            statements.append(self.call_params(call_rows))
        return statements

    def call_params(self, rows: Sequence[CallRow]) -> tuple[str, list[tuple]]:
        sql, procs = self._plain_insert(hook_calls, "_call_insert_cached")
        return sql, _bound(procs, [
            (db_text(r.call_id, 32), db_text(r.service, 100), db_text(r.hook, 64), r.called_at, int(r.status),
             int(r.cards_critical), int(r.cards_warning), int(r.cards_info), int(r.shadow_cards),
             float(r.duration_ms), int(r.ladder_orders), int(r.ig_orders))
            for r in rows
        ])

    def _plain_insert(self, table: sa.Table, cache: str, names: tuple[str, ...] = ()) -> tuple[str, tuple]:
        """A driver-level INSERT of ``names`` (every column of ``table`` when empty) that skips rows already
        stored; built once per store and kept in the attribute ``cache``."""
        cached = getattr(self, cache, None)
        if cached is None:
            dialect = self.engine.dialect
            names = names or tuple(c.name for c in table.columns)
            columns = ", ".join(names)
            marks = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(names))
            if self.dialect == "sqlite":
                sql = f"INSERT OR IGNORE INTO {table.name} ({columns}) VALUES ({marks})"
            else:
                sql = f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
            procs = tuple(table.c[n].type.bind_processor(dialect) for n in names)
            cached = (sql, procs)
            setattr(self, cache, cached)
        return cached

    def card_params(self, rows: Sequence[CardRow]) -> tuple[str, list[tuple]]:
        """The card INSERT and its parameters, text cleaned to what the database accepts.

        The audit writer shares the event loop with the hook calls, so this is the hottest write: a plain
        driver-level executemany (statement built once, bind processors applied here) costs the loop a
        fraction of what a compiled multi-row INSERT ... RETURNING does (~30 µs a row)."""
        sql, procs = self._card_insert()
        return sql, _bound(procs, [
            (db_text(r.card_uuid, 64), db_text(r.service, 100), db_text(r.hook, 64), db_text(r.rule_id, 200),
             db_text(r.indicator, 16), db_text(r.hook_instance, 128), r.issued_at,
             db_text(r.patient_key, 64), bool(r.shadow), db_text(r.rule_version, 16))
            for r in rows
        ])

    def _card_insert(self) -> tuple[str, tuple]:
        return self._plain_insert(cards, "_card_insert_cached", (
            "card_uuid", "service", "hook", "rule_id", "indicator", "hook_instance", "issued_at", "patient_key",
            "shadow", "rule_version"))

    def feedback_values(self, items: Sequence[FeedbackRow]) -> list[dict]:
        """Feedback rows as INSERT values. Lengths are checked when the request is read (a 400 names the
        field), so the limits here only guard other callers; NUL and lone surrogates are replaced."""
        return [
            {
                "card_uuid": db_text(i.card_uuid, 64), "service": db_text(i.service, 100), "outcome": i.outcome,
                "outcome_at": i.outcome_at, "received_at": i.received_at,
                "accepted_suggestions": [db_text(s, 200) for s in i.accepted_suggestions] or None,
                "reason_code": db_text(i.reason_code, 200), "reason_system": db_text(i.reason_system, 500),
                "reason_display": db_text(i.reason_display, 500),
                "user_comment": db_text(i.user_comment, MAX_COMMENT),
            }
            for i in items
        ]

    async def record_feedback(self, items: Sequence[FeedbackRow]) -> int:
        items = dedupe_feedback(items)
        if not items:
            return 0
        return await run_to_end(self._insert_feedback(self.feedback_values(items)))

    async def _insert_feedback(self, values: list[dict]) -> int:
        stmt = self._insert(feedback).returning(feedback.c.id)
        try:
            async with self.engine.begin() as conn:
                return len((await conn.execute(stmt, values)).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"writing feedback failed ({_safe_message(exc)})") from exc

    # ------------------------------------------------------------------ analytics
    async def report(self, since: datetime | None, until: datetime | None) -> list[RuleReport]:
        c, f = cards, feedback
        window = []
        if since is not None:
            window.append(c.c.issued_at >= since)
        if until is not None:
            window.append(c.c.issued_at < until)
        # Feedback is attributed to the period its card was shown in, so an override rate is a share of
        # the cards shown in that period. Feedback on unknown cards falls back to its own outcome time.
        unknown_window = []
        if since is not None:
            unknown_window.append(f.c.outcome_at >= since)
        if until is not None:
            unknown_window.append(f.c.outcome_at < until)

        def distinct_cards(outcome: str):
            return sa.func.count(sa.distinct(sa.case((f.c.outcome == outcome, f.c.card_uuid))))

        window.append(c.c.shadow == sa.false())  # shadow cards were never shown, so never had feedback
        shown_q = sa.select(c.c.rule_id, sa.func.count()).where(*window).group_by(c.c.rule_id)
        joined = f.join(c, f.c.card_uuid == c.c.card_uuid)
        outcomes_q = (sa.select(c.c.rule_id, distinct_cards("accepted"), distinct_cards("overridden"))
                      .select_from(joined).where(*window).group_by(c.c.rule_id))
        reason = sa.func.coalesce(f.c.reason_code, NO_REASON)
        reasons_q = (sa.select(c.c.rule_id, reason, sa.func.count(sa.distinct(f.c.card_uuid)),
                               sa.func.max(f.c.reason_display))
                     .select_from(joined).where(f.c.outcome == "overridden", *window)
                     .group_by(c.c.rule_id, reason))
        orphan = f.outerjoin(c, f.c.card_uuid == c.c.card_uuid)
        unknown_q = (sa.select(distinct_cards("accepted"), distinct_cards("overridden"))
                     .select_from(orphan).where(c.c.card_uuid.is_(None), *unknown_window))
        unknown_reasons_q = (sa.select(reason, sa.func.count(sa.distinct(f.c.card_uuid)),
                                       sa.func.max(f.c.reason_display))
                             .select_from(orphan)
                             .where(c.c.card_uuid.is_(None), f.c.outcome == "overridden", *unknown_window)
                             .group_by(reason))
        try:
            async with self.engine.connect() as conn:
                shown = (await conn.execute(shown_q)).all()
                outcomes = (await conn.execute(outcomes_q)).all()
                reasons = (await conn.execute(reasons_q)).all()
                unknown = (await conn.execute(unknown_q)).one()
                unknown_reasons = (await conn.execute(unknown_reasons_q)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"reading the report failed ({_safe_message(exc)})") from exc

        by_rule: dict[str, RuleReport] = {}

        def rule(rule_id: str) -> RuleReport:
            return by_rule.setdefault(rule_id, RuleReport(rule=rule_id))

        for rule_id, n in shown:
            rule(rule_id).shown = n
        for rule_id, accepted, overridden in outcomes:
            r = rule(rule_id)
            r.accepted, r.overridden = accepted, overridden
        for rule_id, code, n, display in reasons:
            r = rule(rule_id)
            r.override_reasons[code] = n
            if display:
                r.reason_displays[code] = display
        if unknown[0] or unknown[1]:
            r = rule(UNKNOWN_RULE)
            r.accepted, r.overridden = unknown
            for code, n, display in unknown_reasons:
                r.override_reasons[code] = n
                if display:
                    r.reason_displays[code] = display
        return sorted(by_rule.values(), key=lambda r: (r.rule == UNKNOWN_RULE, -r.shown, r.rule))

    # ------------------------------------------------------------------ governance
    async def record_rule_versions(self, rows: Sequence[RuleVersionRow]) -> int:
        """Remember versions not seen before (first_seen of a known version is kept). Returns rows added."""
        if not rows:
            return 0
        values = [{"rule_id": db_text(r.rule_id, 200), "version": db_text(r.version, 16),
                   "first_seen": r.first_seen, "inputs": r.inputs} for r in rows]
        return await run_to_end(self._insert_rule_versions(values))

    async def _insert_rule_versions(self, values: list[dict]) -> int:
        stmt = self._insert(rule_versions).returning(rule_versions.c.rule_id)
        try:
            async with self.engine.begin() as conn:
                return len((await conn.execute(stmt, values)).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"writing rule versions failed ({_safe_message(exc)})") from exc

    async def rule_version_history(self) -> list[RuleVersionRow]:
        """Every stored rule version, oldest first per rule."""
        q = sa.select(rule_versions).order_by(rule_versions.c.rule_id, rule_versions.c.first_seen,
                                              rule_versions.c.version)
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"reading rule versions failed ({_safe_message(exc)})") from exc
        return [RuleVersionRow(rule_id=r.rule_id, version=r.version, first_seen=r.first_seen, inputs=r.inputs)
                for r in rows]

    async def governance_rows(self, since: datetime | None, until: datetime | None) -> dict[str, list]:
        """The raw material of the alert-burden report for [since, until): hook calls, cards (shown and
        shadow) and feedback on those cards. Counts and codes only: no patient key, no comment."""
        c, f, h = cards, feedback, hook_calls

        def window(column):
            parts = []
            if since is not None:
                parts.append(column >= since)
            if until is not None:
                parts.append(column < until)
            return parts

        calls_q = sa.select(h.c.hook, h.c.called_at, h.c.status, h.c.ladder_orders, h.c.ig_orders,
                            h.c.shadow_cards).where(*window(h.c.called_at))
        cards_q = sa.select(c.c.card_uuid, c.c.hook, c.c.rule_id, c.c.rule_version, c.c.shadow,
                            c.c.issued_at).where(*window(c.c.issued_at))
        feedback_q = (sa.select(f.c.card_uuid, f.c.outcome, f.c.outcome_at, f.c.reason_code, f.c.reason_display)
                      .select_from(f.join(c, f.c.card_uuid == c.c.card_uuid)).where(*window(c.c.issued_at)))
        try:
            async with self.engine.connect() as conn:
                calls = (await conn.execute(calls_q)).all()
                card_rows = (await conn.execute(cards_q)).all()
                feedback_rows = (await conn.execute(feedback_q)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"reading the report failed ({_safe_message(exc)})") from exc
        return {"calls": [tuple(r) for r in calls], "cards": [tuple(r) for r in card_rows],
                "feedback": [tuple(r) for r in feedback_rows]}

    # ------------------------------------------------------------------ housekeeping
    async def purge(self, before: datetime) -> int:
        return await run_to_end(self._purge(before))

    async def _purge(self, before: datetime) -> int:
        try:
            async with self.engine.begin() as conn:
                return await conn.run_sync(purge_statements, before)
        except SQLAlchemyError as exc:
            raise StoreError(f"purging failed ({_safe_message(exc)})") from exc

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"the database cannot be reached ({_safe_message(exc)})") from exc

    async def upgrade(self) -> None:
        try:
            await migrate.upgrade(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"migrating the database failed ({_safe_message(exc)})") from exc

    async def revision(self) -> str | None:
        try:
            return await migrate.current_revision(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"the database cannot be read ({_safe_message(exc)})") from exc

    async def close(self) -> None:
        await self.engine.dispose()
