"""The audit and feedback store on SQLite and (when reachable) PostgreSQL: migrations, idempotent
writes, override analytics, retention, and pseudonymous patient keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from store_support import PG_URL, PgSchema, db_url, postgres_unavailable  # noqa: F401 - fixture

from cds_service.config import Settings
from cds_service.store import CardRow, FeedbackRow, StoreError, open_store
from cds_service.store.base import NO_REASON, UNKNOWN_RULE
from cds_service.store.migrate import HEAD, head_revision
from cds_service.store.pseudonym import SECRET_FILE, load_secret, patient_key
from cds_service.store.schema import cards, feedback

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def card(rule="rule.a", at=T0, key="k" * 64, indicator="warning") -> CardRow:
    return CardRow(card_uuid=str(uuid.uuid4()), service="neurosarcoidosis-order-select", hook="order-select",
                   rule_id=rule, indicator=indicator, hook_instance=str(uuid.uuid4()), issued_at=at,
                   patient_key=key)


def fb(card_uuid, outcome="overridden", at=T0 + timedelta(minutes=1), code="not-applicable", display=None,
       suggestions=()) -> FeedbackRow:
    return FeedbackRow(card_uuid=card_uuid, service="neurosarcoidosis-order-select", outcome=outcome,
                       outcome_at=at, received_at=at, accepted_suggestions=tuple(suggestions),
                       reason_code=code if outcome == "overridden" else None,
                       reason_display=display if outcome == "overridden" else None)


@pytest.fixture
async def store(db_url):  # noqa: F811 - pytest fixture injection
    s = open_store(db_url)
    await s.upgrade()
    yield s
    await s.close()


async def test_migrations_create_the_tables_and_are_idempotent(db_url):  # noqa: F811
    s = open_store(db_url)
    try:
        assert await s.revision() is None
        # Two processes starting together must not trip over each other.
        await asyncio.gather(s.upgrade(), open_store(db_url).upgrade())
        await s.upgrade()
        assert await s.revision() == head_revision() is not None
        async with s.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {"cds_card", "cds_feedback", "alembic_version"} <= names
    finally:
        await s.close()


async def test_cards_are_stored_once_per_uuid(store):
    rows = [card(), card(), card("rule.b")]
    assert await store.record_cards(rows) == 3
    assert await store.record_cards(rows + [card()]) == 1  # a retried batch does not double count
    assert await store.record_cards([]) == 0
    report = {r.rule: r for r in await store.report(None, None)}
    assert report["rule.a"].shown == 3 and report["rule.b"].shown == 1


async def test_feedback_is_idempotent_on_card_outcome_and_instant(store):
    c = card()
    await store.record_cards([c])
    item = fb(c.card_uuid)
    # Same item twice in one POST, then again later, then the same instant spelled with an offset.
    assert await store.record_feedback([item, item]) == 1
    assert await store.record_feedback([item]) == 0
    same_instant = fb(c.card_uuid, at=(T0 + timedelta(minutes=1)).astimezone(
        datetime.now().astimezone().tzinfo))
    assert await store.record_feedback([same_instant]) == 0
    # A later override of the same card is a new event, but still one overridden card.
    assert await store.record_feedback([fb(c.card_uuid, at=T0 + timedelta(minutes=5))]) == 1
    (r,) = await store.report(None, None)
    assert (r.shown, r.accepted, r.overridden) == (1, 0, 1)


async def test_report_per_rule_rates_and_reasons(store):
    a = [card("rule.a") for _ in range(4)]
    b = [card("rule.b", indicator="info") for _ in range(2)]
    await store.record_cards(a + b)
    await store.record_feedback([
        fb(a[0].card_uuid, code="patient-declined", display="Patient declined"),
        fb(a[1].card_uuid, code="patient-declined"),
        fb(a[2].card_uuid, code="not-applicable"),
        fb(a[3].card_uuid, outcome="accepted", suggestions=["s-1"]),
        fb(b[0].card_uuid, code=None),
        fb("card-we-never-issued", code="other"),
    ])
    report = {r.rule: r for r in await store.report(None, None)}
    ra, rb, unknown = report["rule.a"], report["rule.b"], report[UNKNOWN_RULE]
    assert (ra.shown, ra.accepted, ra.overridden) == (4, 1, 3)
    assert ra.override_reasons == {"patient-declined": 2, "not-applicable": 1}
    assert ra.reason_displays["patient-declined"] == "Patient declined"
    assert ra.override_rate == 0.75
    assert (rb.shown, rb.overridden, rb.override_reasons) == (2, 1, {NO_REASON: 1})
    assert (unknown.shown, unknown.overridden, unknown.override_rate) == (0, 1, None)
    assert list(report)[-1] == UNKNOWN_RULE  # most shown first, unknown last
    assert ra.to_dict()["override_reasons"] == {"patient-declined": 2, "not-applicable": 1}


async def test_report_window_uses_the_time_the_card_was_shown(store):
    early, late = card(at=T0), card(at=T0 + timedelta(days=10))
    await store.record_cards([early, late])
    # Feedback on the early card arrives much later; it still belongs to the early period.
    await store.record_feedback([fb(early.card_uuid, at=T0 + timedelta(days=20))])
    (r,) = await store.report(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert (r.shown, r.overridden) == (1, 1)
    (r,) = await store.report(T0 + timedelta(days=5), None)
    assert (r.shown, r.overridden) == (1, 0)
    assert await store.report(T0 + timedelta(days=30), None) == []


async def test_purge_deletes_old_rows_with_their_feedback(store):
    old, new = card(at=T0 - timedelta(days=400)), card(at=T0)
    await store.record_cards([old, new])
    await store.record_feedback([fb(old.card_uuid, at=T0), fb(new.card_uuid)])
    assert await store.purge(T0 - timedelta(days=365)) == 2  # the old card and its (recent) feedback
    report = await store.report(None, None)
    assert [(r.rule, r.shown, r.overridden) for r in report] == [("rule.a", 1, 1)]


async def test_times_come_back_as_aware_utc(store):
    c = card(at=datetime(2026, 3, 1, 14, 0, tzinfo=UTC).astimezone())
    await store.record_cards([c])
    async with store.engine.connect() as conn:
        issued = (await conn.execute(sa.select(cards.c.issued_at))).scalar_one()
    assert issued == datetime(2026, 3, 1, 14, 0, tzinfo=UTC) and issued.tzinfo is not None


async def test_free_text_is_bounded(store):
    c = card()
    await store.record_cards([c])
    long = FeedbackRow(card_uuid=c.card_uuid, service="s", outcome="overridden", outcome_at=T0, received_at=T0,
                       reason_code="x" * 500, user_comment="y" * 10_000)
    assert await store.record_feedback([long]) == 1
    async with store.engine.connect() as conn:
        code, comment = (await conn.execute(sa.select(feedback.c.reason_code, feedback.c.user_comment))).one()
    assert len(code) == 200 and len(comment) == 2000


async def test_unreachable_database_is_a_store_error_without_secrets():
    s = open_store("postgresql+psycopg://cds:s3cret-pw@127.0.0.1:1/none?connect_timeout=2")
    try:
        with pytest.raises(StoreError) as err:
            await s.ping()
        assert "s3cret-pw" not in str(err.value)
        with pytest.raises(StoreError):
            await s.record_cards([card()])
    finally:
        await s.close()
    assert "s3cret-pw" not in repr(s)


@pytest.mark.postgres
async def test_plain_postgresql_url_from_settings_works():
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with PgSchema() as schema:
        sep = "&" if "?" in PG_URL else "?"
        settings = Settings(_env_file=None, database_url=f"{PG_URL}{sep}options=-csearch_path%3D{schema.name}")
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")
        s = open_store(settings)
        try:
            await s.ping()
            await s.upgrade()
            assert await s.record_cards([card()]) == 1
        finally:
            await s.close()


def test_default_is_a_sqlite_file_in_the_data_dir(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", database_url=None)
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cds_service.db'}"


async def test_sqlite_file_is_created_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "new-dir" / "cds.db"
    s = open_store(f"sqlite+aiosqlite:///{path}")
    try:
        await s.upgrade()
        async with s.engine.connect() as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
        assert mode.lower() == "wal"
    finally:
        await s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_two_databases_migrated_at_once_in_one_process_each_get_their_tables(tmp_path):
    """Two stores of one process (two applications in a test process, a site running two) starting at the
    same moment: each database ends at the head revision with every table, neither migration fails."""
    stores = [open_store(f"sqlite+aiosqlite:///{tmp_path / name / 'cds.db'}") for name in ("a", "b", "c")]
    try:
        await asyncio.gather(*(s.upgrade() for s in stores))
        for s in stores:
            assert await s.revision() == head_revision()
            async with s.engine.connect() as conn:
                names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            assert {"cds_card", "cds_feedback", "alembic_version"} <= names
    finally:
        for s in stores:
            await s.close()


# --------------------------------------------------------------------------- pseudonymous keys
def test_patient_key_is_an_hmac_never_the_id(tmp_path):
    secret = load_secret(None, tmp_path)
    key = patient_key(secret, "pat-123")
    assert key == hmac.new(secret, b"pat-123", hashlib.sha256).hexdigest()
    assert "pat-123" not in key and len(key) == 64
    assert patient_key(secret, None) is None
    assert patient_key(b"another-secret-another-secret-xx", "pat-123") != key


def test_generated_secret_is_private_and_survives_restarts(tmp_path):
    first = load_secret(None, tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(None, tmp_path / "data") == first
    os.chmod(path, 0o644)  # loosened by hand: tightened again on load
    load_secret(None, tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configured_secret_wins_and_writes_no_file(tmp_path):
    assert load_secret("from-the-environment", tmp_path) == b"from-the-environment"
    assert not (tmp_path / SECRET_FILE).exists()


def test_head_constant_matches_the_migration_scripts():
    """Start-up skips Alembic when the database is at HEAD; a new migration must move HEAD too."""
    assert HEAD == head_revision()
