"""The audit store cannot wedge: writes are never cancelled half-way, one poison row never blocks the
queue, text is stored as each database accepts it, and the queue-depth gauge is true at every moment."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

import pytest
from store_support import BACKENDS, PgSchema, make_card, pg_url_with_schema, postgres_unavailable
from test_audit import CountingMetrics, FakeStore, issue, wait_for

from cds_service.audit import AuditWriter
from cds_service.store import CardRow, FeedbackRow, StoreError, open_store


def card_row(**over) -> CardRow:
    values = dict(card_uuid=str(uuid.uuid4()), service="s", hook="order-sign", rule_id="r", indicator="info",
                  hook_instance="h", issued_at=datetime.now(UTC), patient_key=None)
    values.update(over)
    return CardRow(**values)


def feedback_row(**over) -> FeedbackRow:
    now = datetime.now(UTC)
    values = dict(card_uuid=str(uuid.uuid4()), service="s", outcome="overridden", outcome_at=now, received_at=now)
    values.update(over)
    return FeedbackRow(**values)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with PgSchema() as schema:
        yield pg_url_with_schema(schema.name)


async def test_writes_cancelled_at_any_moment_never_wedge_the_store(db_url):
    """Feedback writes given up at random moments (as a client timeout does) while card batches are
    written: afterwards every write still succeeds at once. (Before: the SQLite store hung for good.)"""
    store = open_store(db_url)
    await store.upgrade()
    rng = random.Random(11)
    written_fb = []

    async def cards_loop():
        for _ in range(40):
            await store.record_cards([card_row() for _ in range(100)])

    async def feedback_loop():
        for _ in range(40):
            row = feedback_row()
            try:
                await asyncio.wait_for(store.record_feedback([row]), rng.uniform(0.0001, 0.01))
                written_fb.append(row)
            except TimeoutError:
                pass

    try:
        async with asyncio.timeout(120):  # a wedged store hangs here (generous: a shared, slow machine)
            await asyncio.gather(cards_loop(), *(feedback_loop() for _ in range(6)))
            async with asyncio.timeout(15):
                assert await store.record_feedback([feedback_row()]) == 1
                assert await store.record_cards([card_row()]) == 1
            # every write that answered is there (and the ones given up on were not half-written)
            again = await store.record_feedback(written_fb)
            assert again == 0
    finally:
        await store.close()


async def test_nul_and_lone_surrogates_are_stored_on_every_backend(db_url):
    store = open_store(db_url)
    await store.upgrade()
    try:
        assert await store.record_cards([card_row(hook_instance="poison-\x00-x\ud800")]) == 1
        row = feedback_row(card_uuid="card-\x00", user_comment="a\x00b", reason_code="c\x00",
                           reason_display="d\x00", reason_system="s\x00")
        assert await store.record_feedback([row]) == 1
        assert await store.record_feedback([row]) == 0  # still idempotent on the cleaned key
    finally:
        await store.close()


class RefusingStore(FakeStore):
    """Up (answers ping) but refuses every batch that holds a row of rule 'poison'."""

    def __init__(self):
        super().__init__()
        self.written: list = []

    async def record_cards(self, rows):
        if any(r.rule_id == "poison" for r in rows):
            raise StoreError("text fields cannot contain NUL (test)")
        self.written.extend(rows)
        return len(rows)


async def test_a_poison_row_is_quarantined_and_counted_and_the_rest_is_written():
    store, metrics = RefusingStore(), CountingMetrics()
    writer = AuditWriter(store, b"k" * 32, metrics=lambda: metrics, interval=0.01)
    await writer.start()
    try:
        issue(writer, 5)
        writer.cards_issued(service="s", hook="order-select", hook_instance="hi", patient_id="p",
                            cards=[make_card("poison")])
        issue(writer, 5)
        await wait_for(lambda: writer.queued == 0, within=10)
        for _ in range(3):  # later calls are not blocked behind it
            issue(writer, 4)
        await wait_for(lambda: len(store.written) == 22, within=10)
        assert {r.rule_id for r in store.written} == {"rule.0", "rule.1", "rule.2"}
        assert metrics.counts[("dropped", "quarantined")] == 1
        assert metrics.counts[("written", "cards")] == 22
        assert ("dropped", "queue_full") not in metrics.counts
    finally:
        await writer.stop()


async def test_the_queue_depth_gauge_is_true_at_every_moment():
    store, metrics = FakeStore(), CountingMetrics()
    store.down = True
    writer = AuditWriter(store, b"k" * 32, metrics=lambda: metrics, interval=0.01, max_queue=50)
    await writer.start()
    try:
        issue(writer, 7)
        assert metrics.depth == writer.queued == 7  # at once, before any write attempt
        await asyncio.sleep(0.3)  # failed attempts in between
        issue(writer, 5)
        assert metrics.depth == 12
        issue(writer, 60)  # 38 fit, 22 dropped
        assert metrics.depth == 50 and metrics.counts[("dropped", "queue_full")] == 22
        store.down = False
        await wait_for(lambda: writer.queued == 0, within=10)
        assert metrics.depth == 0
    finally:
        await writer.stop()


class SlowStore(FakeStore):
    def __init__(self, delay):
        super().__init__()
        self.write_delay = delay
        self.committed: list = []

    async def record_feedback(self, items):
        await asyncio.sleep(self.write_delay)
        self.committed.extend(items)
        return len(items)


async def test_feedback_waits_at_most_its_timeout_and_never_cancels_the_write(monkeypatch):
    import cds_service.audit as audit_mod
    from cds_service.errors import ServiceError
    from cds_service.models import FeedbackItem

    monkeypatch.setattr(audit_mod, "FEEDBACK_TIMEOUT", 0.2)
    store = SlowStore(0.6)
    writer = AuditWriter(store, b"k" * 32)
    await writer.start()
    item = FeedbackItem.model_validate({"card": "c1", "outcome": "overridden",
                                        "outcomeTimestamp": "2026-01-01T00:00:00Z"})
    try:
        started = time.monotonic()
        with pytest.raises(ServiceError) as err:
            await writer.feedback_received(service="s", items=[item])
        assert err.value.status == 503 and err.value.headers["Retry-After"]
        assert time.monotonic() - started < 0.5
        await wait_for(lambda: len(store.committed) == 1, within=3)  # the write still completed
    finally:
        await writer.stop()


async def test_repeated_feedback_failures_are_logged_at_a_bounded_rate(capfd):
    from cds_service import logs
    from cds_service.errors import ServiceError
    from cds_service.models import FeedbackItem

    logs.configure("INFO", True)
    store = FakeStore()
    store.down = True
    writer = AuditWriter(store, b"k" * 32)
    item = FeedbackItem.model_validate({"card": "c1", "outcome": "overridden",
                                        "outcomeTimestamp": "2026-01-01T00:00:00Z"})
    for _ in range(50):
        with pytest.raises(ServiceError):
            await writer.feedback_received(service="s", items=[item])
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "feedback_write_failed" in ln]
    assert len(lines) == 1


class SlowMigrationStore(FakeStore):
    """A migration that takes a while in a thread a cancel cannot stop, and refuses a second one beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.upgrading = 0
        self.upgrades = 0

    async def upgrade(self):
        if self.upgrading:
            raise StoreError("database is locked (a migration is running)")
        self.upgrading += 1

        def migrate() -> None:  # runs to its end whatever happens to the task that awaits it
            time.sleep(0.3)
            self.upgrades += 1
            self.upgrading -= 1

        await asyncio.to_thread(migrate)


async def test_stopping_while_the_store_migrates_waits_for_it_and_writes_every_queued_row(monkeypatch):
    """The store opens after the first call; a shutdown that comes while it migrates neither cuts the
    migration short nor starts a second one beside it, and the queued cards are written."""
    import cds_service.audit as audit_mod

    monkeypatch.setattr(audit_mod, "START_GRACE", 0.01)
    store = SlowMigrationStore()
    writer = AuditWriter(store, b"k" * 32, interval=0.01)
    await writer.start_in_background()
    issue(writer, 5)
    await wait_for(lambda: store.upgrading == 1, within=5)  # the migration is under way
    await writer.stop()
    assert store.upgrades == 1
    assert sum(len(b) for b in store.batches) == 5 and writer.queued == 0


async def test_a_migration_slower_than_the_start_up_deadline_is_waited_for_not_started_twice(monkeypatch):
    import cds_service.audit as audit_mod

    monkeypatch.setattr(audit_mod, "STARTUP_TIMEOUT", 0.05)
    store = SlowMigrationStore()
    writer = AuditWriter(store, b"k" * 32, interval=0.01)
    await writer.start()  # gives up waiting after 0.05 s; the migration goes on
    issue(writer, 3)
    await wait_for(lambda: writer.queued == 0, within=10)
    await writer.stop()
    assert store.upgrades == 1
    assert sum(len(b) for b in store.batches) == 3
