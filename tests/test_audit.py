"""The audit writer: cards are queued and written in batches off the request path; a database outage
never fails a hook call; feedback is stored before the 200 (idempotently) or refused with a 503."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from conftest import CLIENT_EXAMPLES, load_json
from fastapi.testclient import TestClient
from store_support import make_card, stub_engine
from test_app import SELECT, hook_request

from cds_service.app import create_app
from cds_service.audit import AuditWriter, feedback_rows
from cds_service.config import Settings
from cds_service.models import FeedbackRequest
from cds_service.store import StoreError, open_store
from cds_service.store.base import Store
from cds_service.store.pseudonym import load_secret, patient_key
from cds_service.store.schema import cards as cards_table


class FakeStore(Store):
    """Records batches; can be switched into an outage."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list] = []
        self.feedback: list = []
        self.down = False
        self.delay = delay
        self.closed = False

    async def record_cards(self, rows):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise StoreError("database is down (test)")
        self.batches.append(list(rows))
        return len(rows)

    async def record_feedback(self, items):
        if self.down:
            raise StoreError("database is down (test)")
        self.feedback.extend(items)
        return len(items)

    async def report(self, since, until):
        return []

    async def purge(self, before):
        return 0

    async def ping(self):
        if self.down:
            raise StoreError("down")

    async def upgrade(self):
        if self.down:
            raise StoreError("down")

    async def revision(self):
        return "0001"

    async def close(self):
        self.closed = True


class CountingMetrics:
    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {}
        self.depth = 0

    def _add(self, what, label, n):
        self.counts[(what, label)] = self.counts.get((what, label), 0) + n

    def audit_written(self, kind, n):
        self._add("written", kind, n)

    def audit_failed(self, kind, n):
        self._add("failed", kind, n)

    def audit_dropped(self, reason, n):
        self._add("dropped", reason, n)

    def audit_queue_depth(self, n):
        self.depth = n


def issue(writer, n, patient="pat-1"):
    writer.cards_issued(service="neurosarcoidosis-order-select", hook="order-select", hook_instance="hi-1",
                        patient_id=patient, cards=[make_card(f"rule.{i % 3}") for i in range(n)])


async def wait_for(predicate, within=3.0):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_cards_are_written_in_batches():
    store, metrics = FakeStore(), CountingMetrics()
    writer = AuditWriter(store, b"s" * 32, metrics=lambda: metrics, batch_size=20, max_batch=100, interval=0.05)
    await writer.start()
    for _ in range(25):
        issue(writer, 10)  # 25 hook calls with 10 cards each, arriving together
    await wait_for(lambda: sum(map(len, store.batches)) == 250)
    assert [len(b) for b in store.batches] == [100, 100, 50]  # a backlog goes in the biggest transactions
    assert metrics.counts[("written", "cards")] == 250
    issue(writer, 3)  # a trickle waits up to `interval` for company, then goes anyway
    await asyncio.sleep(0.02)
    assert len(store.batches) == 3
    await wait_for(lambda: len(store.batches) == 4, within=1)
    await writer.stop()
    assert store.closed


async def test_queueing_never_waits_for_the_database():
    store = FakeStore(delay=0.2)  # a very slow database
    writer = AuditWriter(store, b"s" * 32, interval=0.0)
    await writer.start()
    issue(writer, 5)
    await asyncio.sleep(0.01)  # the writer is now inside the slow write
    assert len(store.batches) == 0  # the first batch is still being written
    for _ in range(100):
        issue(writer, 3)  # returns at once: the rows wait in the queue, not the caller
    assert writer.queued == 305 and len(store.batches) == 0  # 5 in the slow write + 300 queued
    await writer.stop()
    assert sum(map(len, store.batches)) == 305  # flushed on shutdown


async def test_rows_carry_rule_indicator_and_a_pseudonymous_key():
    store = FakeStore()
    writer = AuditWriter(store, b"s" * 32, interval=0.0)
    await writer.start()
    writer.cards_issued(service="svc", hook="order-sign", hook_instance="hi-9", patient_id="pat-77",
                        cards=[make_card("ivig.dose", "info")])
    await writer.stop()
    (row,) = store.batches[0]
    assert (row.rule_id, row.indicator, row.hook, row.hook_instance) == ("ivig.dose", "info", "order-sign", "hi-9")
    assert row.patient_key == patient_key(b"s" * 32, "pat-77") and "pat-77" not in row.patient_key


async def test_outage_keeps_rows_retries_and_counts_failures():
    store, metrics = FakeStore(), CountingMetrics()
    writer = AuditWriter(store, b"s" * 32, metrics=lambda: metrics, interval=0.01)
    await writer.start()
    store.down = True
    issue(writer, 4)
    await wait_for(lambda: metrics.counts.get(("failed", "cards"), 0) >= 4)
    assert store.batches == [] and writer.queued == 4  # kept for the next attempt
    store.down = False
    await wait_for(lambda: sum(map(len, store.batches)) == 4, within=5)
    assert metrics.counts[("written", "cards")] == 4
    await writer.stop()


async def test_full_queue_drops_and_counts():
    store, metrics = FakeStore(), CountingMetrics()
    writer = AuditWriter(store, b"s" * 32, metrics=lambda: metrics, max_queue=5)
    issue(writer, 8)  # writer not started: nothing drains
    assert writer.queued == 5 and metrics.counts[("dropped", "queue_full")] == 3


async def test_rows_still_queued_at_shutdown_during_an_outage_are_counted_as_lost():
    store, metrics = FakeStore(), CountingMetrics()
    writer = AuditWriter(store, b"s" * 32, metrics=lambda: metrics, interval=0.01)
    await writer.start()
    store.down = True
    issue(writer, 3)
    await writer.stop()
    assert metrics.counts[("dropped", "shutdown")] == 3 and writer.queued == 0


async def test_store_down_at_startup_does_not_prevent_starting():
    store = FakeStore()
    store.down = True
    writer = AuditWriter(store, b"s" * 32, interval=0.01)
    await writer.start()  # logs, does not raise
    store.down = False
    issue(writer, 2)
    await wait_for(lambda: sum(map(len, store.batches)) == 2)
    await writer.stop()


async def test_retention_purge_runs_at_start_with_the_configured_cutoff():
    class PurgingStore(FakeStore):
        def __init__(self):
            super().__init__()
            self.cutoffs = []

        async def purge(self, before):
            self.cutoffs.append(before)
            return 0

    store = PurgingStore()
    writer = AuditWriter(store, b"s" * 32, retention_days=30)
    await writer.start()
    await wait_for(lambda: store.cutoffs)
    await writer.stop()
    age = datetime.now(UTC) - store.cutoffs[0]
    assert abs(age.total_seconds() - 30 * 86400) < 60
    disabled = PurgingStore()
    writer = AuditWriter(disabled, b"s" * 32, retention_days=0)
    await writer.start()
    await asyncio.sleep(0.05)
    await writer.stop()
    assert disabled.cutoffs == []


def test_feedback_rows_understand_spec_sandbox_and_epic_shapes():
    epic = load_json(CLIENT_EXAMPLES / "epic-docs-feedback-examples.json")
    items = FeedbackRequest.model_validate(epic["overridden_with_epic_extension"]).feedback
    (row,) = feedback_rows("svc", items)
    assert (row.reason_code, row.reason_display, row.user_comment) == ("45", "Does not meet criteria",
                                                                        "User Entered Free Text")
    assert row.outcome_at == datetime(2022, 5, 19, 19, 44, 4, tzinfo=UTC)
    sandbox = load_json(CLIENT_EXAMPLES / "sandbox-feedback-overridden.json")
    (row,) = feedback_rows("svc", FeedbackRequest.model_validate(sandbox).feedback)
    assert (row.reason_code, row.reason_system) == ("patient-declined", "http://example.org/override")
    accepted = FeedbackRequest.model_validate(epic["accepted"]).feedback
    (row,) = feedback_rows("svc", accepted)
    assert row.accepted_suggestions == ("replaceWithGUID",) and row.reason_code is None


# --------------------------------------------------------------------------- through the HTTP app
@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                    database_url=None, log_json=True)


def stored_cards(settings):
    async def read():
        store = open_store(settings)
        try:
            async with store.engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(sa.select(cards_table))]
        finally:
            await store.close()

    return asyncio.run(read())


def test_hook_cards_reach_the_database_with_a_patient_key_only(settings, monkeypatch):
    stub_engine(monkeypatch)
    with TestClient(create_app(settings)) as client:
        resp = client.post(SELECT, json=hook_request())
        assert resp.status_code == 200
        uuids = {c["uuid"] for c in resp.json()["cards"]}
    rows = stored_cards(settings)  # the shutdown flushed the queue
    assert {r["card_uuid"] for r in rows} == uuids
    assert {r["rule_id"] for r in rows} == {"test.rule-a", "test.rule-b"}
    secret = load_secret(None, settings.data_dir)
    assert {r["patient_key"] for r in rows} == {patient_key(secret, "p1")}
    raw = (settings.data_dir / "cds_service.db").read_bytes()
    assert b"Patient/p1" not in raw


def test_database_outage_still_serves_cards_and_counts_the_failure(settings, monkeypatch):
    stub_engine(monkeypatch)
    app = create_app(settings)
    broken = FakeStore()
    broken.down = True
    app.state.audit.store = broken
    with TestClient(app) as client:
        before = _sample(client, 'cds_audit_write_failures_total{kind="cards"}')
        resp = client.post(SELECT, json=hook_request())
        assert resp.status_code == 200 and len(resp.json()["cards"]) == 2
        deadline = time.monotonic() + 3
        while _sample(client, 'cds_audit_write_failures_total{kind="cards"}') < before + 2:
            assert time.monotonic() < deadline, "the failed write was not counted"
            time.sleep(0.02)


def test_feedback_is_stored_before_200_and_refused_with_503_during_an_outage(settings, monkeypatch):
    stub_engine(monkeypatch)
    body = load_json(CLIENT_EXAMPLES / "sandbox-feedback-overridden.json")
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post(SELECT + "/feedback", json=body).status_code == 200
        assert client.post(SELECT + "/feedback", json=body).status_code == 200  # repeat: fine, not recounted
        report = asyncio.run(_report(settings))
        assert [(r.rule, r.overridden) for r in report] == [("unknown", 1)]

        real = app.state.audit.store
        broken = FakeStore()
        broken.down = True
        app.state.audit.store = broken
        resp = client.post(SELECT + "/feedback", json=body)
        assert resp.status_code == 503 and resp.headers["retry-after"]
        assert resp.json()["resourceType"] == "OperationOutcome"
        assert "could not be stored" in resp.json()["issue"][0]["diagnostics"]
        app.state.audit.store = real


def test_audit_logs_carry_no_patient_id(settings, monkeypatch, capfd):
    stub_engine(monkeypatch)
    app = create_app(settings)
    broken = FakeStore()
    broken.down = True
    app.state.audit.store = broken
    with TestClient(app) as client:
        client.post(SELECT, json=hook_request())
        time.sleep(0.3)
    err = capfd.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["event"] == "audit_write_failed" for e in events)
    assert '"p1"' not in err and "Patient/p1" not in err


async def _report(settings):
    store = open_store(settings)
    try:
        return await store.report(None, None)
    finally:
        await store.close()


def _sample(client, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_new_database_is_migrated_once_when_the_start_and_a_feedback_call_race():
    # The service answers before the audit store is opened; a feedback call can reach the store while the
    # background start-up is still migrating it. One migration must run, not two creating the same tables.
    class SlowMigration(FakeStore):
        upgrades = 0

        async def upgrade(self):
            SlowMigration.upgrades += 1
            await asyncio.sleep(0.05)

    writer = AuditWriter(SlowMigration(), b"s" * 32)
    await asyncio.gather(writer._ensure_ready(), writer._ensure_ready(), writer._ensure_ready())
    assert SlowMigration.upgrades == 1
