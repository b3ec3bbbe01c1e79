"""Audit trail of hook calls, issued cards and clinician feedback, written off the card path.

* ``cards_issued`` (called by the hook handler) queues one entry per hook call: the call's row (the
  denominator of the alert-burden report: status, cards by indicator, shadow cards, order counts; no
  patient), its cards and the cards of rules in shadow mode (flagged, never returned). Rows are built by
  the writer, stamped with each rule's version (:mod:`cds_service.governance.versions`).
* ``cards_issued`` appends to an in-memory,
  bounded queue: no I/O, about a microsecond. One background task per process writes them in batches: at
  most ``INTERVAL`` s after the first row arrives, at once when ``BATCH_SIZE`` rows are waiting, and up to
  ``MAX_BATCH`` rows per transaction when it has fallen behind (a saturated event loop delays each of the
  writer's database round trips, so bigger transactions are how it catches up). The EHR never waits for
  the database (a single-row transaction costs about as much as a batch of a hundred rows).
* A database outage never fails a hook call: the writer keeps the batch and retries with backoff while
  new rows queue up; when the queue is full new rows are dropped. Failed attempts and dropped rows are
  counted in ``/metrics`` and logged (without patient data). A batch the database refuses while it is up
  (it answers a ping) is split to find the rows it refuses; such a row is quarantined (counted as
  dropped with reason ``quarantined`` and logged by card uuid and rule), so one bad row never blocks
  the rows behind it. ``cds_audit_queue_depth`` is set on every change: rows accepted and not yet
  written or given up on.
* Feedback is written synchronously, not queued: it is low-volume, off the clinician's path (the EHR
  posts it after the fact), and the spec asks for it to be kept reliably. A 200 therefore means it is
  stored (idempotently); if the database is down the client gets a 503 OperationOutcome and may retry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service import logs
from cds_service.errors import ServiceError
from cds_service.models import RULE_ID_EXTENSION, new_uuid
from cds_service.rfc3339 import parse_instant
from cds_service.store.base import CallRow, CardRow, FeedbackRow, RuleVersionRow, Store, StoreError, run_to_end
from cds_service.store.pseudonym import load_secret

log = logs.get_logger("cds_service.audit")

BATCH_SIZE = 100
MAX_BATCH = 1000  # 8 columns x 1000 rows stays far below SQLite's and PostgreSQL's bind-parameter limits
INTERVAL = 0.05  # seconds to wait for more rows before writing a batch
MAX_QUEUE = 10_000
# A feedback POST waits at most this long for a place among the writes in flight, then for its write;
# past that the client gets a 503 with Retry-After. The write itself is never cancelled (see the store).
FEEDBACK_TIMEOUT = 8.0
MAX_FEEDBACK_IN_FLIGHT = 32
# A batch the database refuses while it answers a ping is split until the refused rows are found; a
# single row refused this many times is quarantined: counted, logged (ids only), and taken off the queue.
POISON_ATTEMPTS = 3
RETRY_AFTER_SECONDS = "30"
STARTUP_TIMEOUT = 15.0
# The store is opened once the first call is answered, or after this many seconds without one.
START_GRACE = 2.0
SHUTDOWN_TIMEOUT = 10.0  # uvicorn's graceful shutdown waits for the lifespan; do not hang it forever
PURGE_EVERY = 6 * 3600.0
UNLABELLED_RULE = "unlabelled"  # a card without the rule-id extension (should not happen)


def _parse_time(value: str) -> datetime:
    return parse_instant(value)  # validated when the request was read


def feedback_rows(service: str, items: Sequence[Any], received_at: datetime | None = None) -> list[FeedbackRow]:
    """Rows for :class:`~cds_service.models.FeedbackItem` objects (spec, sandbox and Epic shapes)."""
    received_at = received_at or datetime.now(UTC)
    rows = []
    for item in items:
        code, display = item.reason_code()
        reason = item.overrideReason
        system = reason.reason.system if reason is not None and reason.reason is not None else None
        rows.append(FeedbackRow(
            card_uuid=item.card,
            service=service,
            outcome=item.outcome,
            outcome_at=_parse_time(item.outcomeTimestamp),
            received_at=received_at,
            accepted_suggestions=tuple(s.id for s in item.acceptedSuggestions or ()),
            reason_code=code if item.outcome == "overridden" else None,
            reason_system=system if item.outcome == "overridden" else None,
            reason_display=display if item.outcome == "overridden" else None,
            user_comment=reason.userComment if reason is not None else None,
        ))
    return rows


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What a hook call's audit row records besides its cards (no patient, no user)."""

    status: int = 200  # HTTP status of the answer
    duration_s: float = 0.0
    ladder_orders: int = 0  # "the orders" of the call that are ladder drugs
    ig_orders: int = 0  # ... and immune globulin


class AuditWriter:
    def __init__(self, store: Store, secret: bytes, *, metrics: Callable[[], Any] = lambda: None,
                 batch_size: int = BATCH_SIZE, max_batch: int = MAX_BATCH, interval: float = INTERVAL,
                 max_queue: int = MAX_QUEUE,
                 retention_days: int = 0, rule_versions: Sequence[Any] = ()) -> None:
        self.store = store
        # cds_service.governance.versions.RuleVersion of every rule: stamped on each card row, and recorded
        # in the store once (the first time this service runs with a version).
        self.rule_versions = list(rule_versions)
        self.versions = {v.rule_id: v.version for v in self.rule_versions}
        self._versions_recorded = not self.rule_versions
        self._metrics = metrics
        self.batch_size = batch_size
        self.max_batch = max(max_batch, batch_size)
        self.interval = interval
        self.max_queue = max_queue
        self.retention_days = retention_days
        # One entry per hook call: (time, service, hook, hookInstance, patient id,
        # [(uuid, rule, indicator, shadow)], (status, ms, ladder orders, ig orders) or None, rows).
        # Rows (and the patient key HMAC) are built by the writer, not on the request path.
        self._pending: collections.deque[tuple] = collections.deque()
        self._queued_rows = 0
        self._hmac = hmac.new(secret, digestmod=hashlib.sha256)
        self._write_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        self._stopping = False
        self._ready = False  # schema migrated
        self._ready_lock = asyncio.Lock()
        self._upgrade: asyncio.Future | None = None
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self._feedback_slots = asyncio.Semaphore(MAX_FEEDBACK_IN_FLIGHT)
        self._log_limited = logs.RateLimited(every=10.0)
        self._next_purge = 0.0
        self._quarantined_now = 0
        self._quarantined_calls = 0

    # ------------------------------------------------------------------ request path
    def cards_issued(self, *, service: str, hook: str, hook_instance: str, patient_id: str | None,
                     cards: Sequence[Any], shadow_cards: Sequence[Any] = (), call: CallFacts | None = None) -> None:
        """Queue a hook call's cards; with ``call``, also the call's own row (the denominator of the alert
        rates) and the cards of rules in shadow mode (flagged, never shown). Never raises, never waits, does
        no I/O. Without ``call``, cards beyond the queue's room are dropped; with it, the call is kept whole or
        dropped whole (a call without its cards, or cards without their call, would bias the rates)."""
        def entries(items, shadow: bool) -> list[tuple]:
            return [(c.uuid, (c.extension or {}).get(RULE_ID_EXTENSION), c.indicator, shadow) for c in items]

        room = self.max_queue - self._queued_rows
        if call is not None:
            rows = 1 + len(cards) + len(shadow_cards)
            if rows > room:
                self._count("audit_dropped", "queue_full", rows)
                return
            self._enqueue((time.time(), service, hook, hook_instance, patient_id,
                           entries(cards, False) + entries(shadow_cards, True),
                           (int(call.status), call.duration_s * 1000.0, int(call.ladder_orders),
                            int(call.ig_orders)), rows))
            return
        if not cards:
            return
        if len(cards) > room:
            self._count("audit_dropped", "queue_full", len(cards) - max(room, 0))
            if room <= 0:
                return
            cards = cards[:room]
        self._enqueue((time.time(), service, hook, hook_instance, patient_id, entries(cards, False), None,
                       len(cards)))

    def _enqueue(self, entry: tuple) -> None:
        self._pending.append(entry)
        self._queued_rows += entry[7]
        self._gauge_queue()
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _key(self, patient_id: str | None) -> str | None:
        if not patient_id:
            return None
        h = self._hmac.copy()  # the keyed state is precomputed once
        h.update(patient_id.encode("utf-8"))
        return h.hexdigest()

    def _rows(self, entries: list[tuple]) -> list[CardRow | CallRow]:
        rows: list[CardRow | CallRow] = []
        versions = self.versions
        for at, service, hook, hook_instance, patient_id, cards, call, _n in entries:
            issued_at = datetime.fromtimestamp(at, UTC)
            key = self._key(patient_id) if cards else None
            shown = {"critical": 0, "warning": 0, "info": 0}
            shadow_n = 0
            for uuid, rule, indicator, shadow in cards:
                rule_id = str(rule or UNLABELLED_RULE)
                rows.append(CardRow(card_uuid=uuid, service=service, hook=hook, rule_id=rule_id,
                                    indicator=indicator, hook_instance=hook_instance, issued_at=issued_at,
                                    patient_key=key, shadow=shadow, rule_version=versions.get(rule_id)))
                if shadow:
                    shadow_n += 1
                elif indicator in shown:
                    shown[indicator] += 1
            if call is not None:
                status, duration_ms, ladder, ig = call
                # The call id is a time-ordered UUID (version 7, as the card uuids; models.new_uuid) in 32 hex
                # digits: new rows land at the right edge of the table's key index, not on a random page.
                rows.append(CallRow(call_id=new_uuid().replace("-", ""), service=service, hook=hook,
                                    called_at=issued_at, status=status, cards_critical=shown["critical"],
                                    cards_warning=shown["warning"], cards_info=shown["info"], shadow_cards=shadow_n,
                                    duration_ms=round(duration_ms, 3), ladder_orders=ladder, ig_orders=ig))
        return rows

    async def feedback_received(self, *, service: str, items: Sequence[Any]) -> int:
        """Store feedback before answering; returns the number of new rows (repeats count 0).

        The timeout bounds the waiting (for a place among the writes in flight, then for the write), never
        the write: a write that outlives the wait still commits, and the client's retry is a no-op."""
        rows = feedback_rows(service, items)
        deadline = asyncio.get_running_loop().time() + FEEDBACK_TIMEOUT
        try:
            async with asyncio.timeout_at(deadline):
                await self._feedback_slots.acquire()
        except TimeoutError as exc:
            raise self._feedback_unavailable(service, rows, "busy") from exc
        try:
            async with asyncio.timeout_at(deadline):
                added = await run_to_end(self._store_feedback(rows))
        except (StoreError, TimeoutError) as exc:
            raise self._feedback_unavailable(service, rows, str(exc) if isinstance(exc, StoreError) else "timeout") \
                from exc
        finally:
            self._feedback_slots.release()
        self._count("audit_written", "feedback", added)
        return added

    async def _store_feedback(self, rows: list[FeedbackRow]) -> int:
        await self._ensure_ready()
        return await self.store.record_feedback(rows)

    def _feedback_unavailable(self, service: str, rows: list, error: str) -> ServiceError:
        self._count("audit_failed", "feedback", len(rows))
        self._log_limited(log.error, "feedback_write_failed", service=service, items=len(rows), error=error)
        return ServiceError("The feedback could not be stored right now; please send it again later.",
                            status=503, code="transient", headers={"Retry-After": RETRY_AFTER_SECONDS})

    # ------------------------------------------------------------------ lifecycle
    async def start(self, app=None) -> None:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                await self._ensure_ready()
        except (StoreError, TimeoutError) as exc:
            # Serve cards anyway; the writer keeps trying and counts what it cannot write.
            log.error("audit_store_unavailable", error=str(exc) or "timeout", store=repr(self.store))
        self._task = asyncio.create_task(self._run(), name="cds-audit-writer")

    async def start_in_background(self, app=None) -> None:
        """:meth:`start` without holding up the service: the store opens and migrates once the first call
        has queued its rows (or after ``START_GRACE`` seconds), so the first answer does not wait for it."""

        async def later() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_GRACE):
                    await self._wakeup.wait()
            await asyncio.sleep(0.01)  # the call that queued the rows sends its answer first
            await self.start()

        self._starting = asyncio.create_task(later(), name="cds-audit-start")

    async def stop(self, app=None) -> None:
        if self._starting is not None and not self._starting.done():
            # Never cancelled: a migration under way runs in a thread that a cancel would not stop, and a
            # second start beside it would find the database locked. Waking it starts it now if it has not.
            self._wakeup.set()
            try:
                await self._starting
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - shutting down: log, go on
                log.error("audit_store_unavailable", error=type(exc).__name__, store=repr(self.store))
            if self._task is None:
                await self.start()
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, SHUTDOWN_TIMEOUT)
            except TimeoutError:
                lost = self._queued_rows
                self._pending.clear()
                self._queued_rows = 0
                self._gauge_queue()
                if lost:
                    self._count("audit_dropped", "shutdown", lost)
                    log.error("audit_rows_lost_at_shutdown", rows=lost)
        await self.store.close()

    async def flush(self) -> None:
        """Write everything queued now (tests, benchmarks)."""
        while self._pending:
            if not await self._write_batch():
                return
        async with self._write_lock:  # and wait for a batch the background writer has in flight
            pass

    # ------------------------------------------------------------------ writer
    async def _ensure_ready(self) -> None:
        if not self._ready:
            # One migration at a time, and never cut short: the start-up (in the background) and a feedback
            # call may both get here before the store is ready, and a caller's deadline may pass while the
            # migration runs in its thread. A caller that gives up leaves it running; the next one waits for
            # that same migration instead of starting a second one beside it.
            async with self._ready_lock:
                if not self._ready:
                    if self._upgrade is None:
                        self._upgrade = asyncio.ensure_future(self.store.upgrade())
                    upgrade = self._upgrade
                    try:
                        await asyncio.shield(upgrade)
                    finally:
                        if upgrade.done():
                            self._upgrade = None  # finished; a failed one is tried again by the next caller
                    self._ready = True
        if not self._versions_recorded:
            await self._record_versions()

    async def _record_versions(self) -> None:
        record = getattr(self.store, "record_rule_versions", None)
        self._versions_recorded = True
        if record is None:
            return
        now = datetime.now(UTC)
        rows = [RuleVersionRow(rule_id=v.rule_id, version=v.version, first_seen=now, inputs=v.inputs)
                for v in self.rule_versions]
        try:
            added = await record(rows)
        except StoreError as exc:
            self._versions_recorded = False  # tried again with the next write
            log.warning("rule_versions_not_recorded", error=str(exc))
            return
        if added:
            log.info("rule_versions_recorded", new=added)

    async def _run(self) -> None:
        backoff = 0.0
        await self._maybe_purge()  # at start, then every PURGE_EVERY seconds
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._idle_timeout())
                except TimeoutError:
                    pass
                await self._maybe_purge()
                continue
            if not self._stopping:
                # Let a batch build up: one transaction for many rows is what keeps writes cheap.
                if self._queued_rows < self.batch_size:
                    await asyncio.sleep(max(self.interval, backoff))
                elif backoff:
                    await asyncio.sleep(backoff)
            ok = await self._write_batch()
            if ok:
                backoff = 0.0
            elif self._stopping:
                lost = self._queued_rows
                self._pending.clear()
                self._queued_rows = 0
                self._gauge_queue()
                self._count("audit_dropped", "shutdown", lost)
                log.error("audit_rows_lost_at_shutdown", rows=lost)
                return
            else:
                backoff = min(5.0, max(0.25, backoff * 2))

    def _idle_timeout(self) -> float | None:
        if self.retention_days <= 0:
            return None
        return max(1.0, self._next_purge - time.monotonic())

    async def _write_batch(self) -> bool:
        async with self._write_lock:
            entries, n = [], 0
            while self._pending and n < self.max_batch:
                entry = self._pending.popleft()
                entries.append(entry)
                n += entry[7]
            if not entries:
                return True
            rows = self._rows(entries)
            n_calls = sum(1 for r in rows if isinstance(r, CallRow))
            try:
                await self._ensure_ready()
                await self.store.record_audit(rows)
            except Exception as exc:  # noqa: BLE001 - whatever the database does, the writer must survive
                self._count("audit_failed", "cards", n - n_calls)
                self._count("audit_failed", "calls", n_calls)
                if not await self._store_answers():
                    # An outage: keep the calls (in order, at the front) for the next attempt; they still
                    # count against the queue bound, so new calls are dropped rather than memory growing.
                    self._pending.extendleft(reversed(entries))
                    self._log_failure(exc)
                    return False
                # The database is up and refused this batch: find the rows it refuses, write the rest.
                await self._write_isolating(rows)
            self._queued_rows -= n
            self._gauge_queue()
        self._count("audit_written", "cards", n - n_calls - self._quarantined_now)
        self._count("audit_written", "calls", n_calls - self._quarantined_calls)
        self._quarantined_now = self._quarantined_calls = 0
        await self._maybe_purge()
        if self._failing_since is not None:
            log.info("audit_store_recovered", after_s=round(time.monotonic() - self._failing_since, 1))
            self._failing_since = None
        return True

    async def _store_answers(self) -> bool:
        try:
            async with asyncio.timeout(5.0):
                await self.store.ping()
        except Exception:  # noqa: BLE001 - any failure: the store is not answering
            return False
        return True

    async def _write_isolating(self, rows: list[CardRow | CallRow]) -> None:
        """Write ``rows`` in halves until every row is written or, alone, refused POISON_ATTEMPTS times."""
        if len(rows) > 1:
            mid = len(rows) // 2
            for part in (rows[:mid], rows[mid:]):
                try:
                    await self.store.record_audit(part)
                except Exception:  # noqa: BLE001 - narrowed down below
                    await self._write_isolating(part)
            return
        row = rows[0]
        error: Exception | None = None
        for _ in range(POISON_ATTEMPTS):
            try:
                await self.store.record_audit(rows)
                return
            except Exception as exc:  # noqa: BLE001
                error = exc
                await asyncio.sleep(0.05)
        self._count("audit_dropped", "quarantined", 1)
        reason = str(error) if isinstance(error, StoreError) else type(error).__name__
        if isinstance(row, CallRow):
            self._quarantined_calls += 1
            log.error("audit_row_quarantined", call=row.call_id, hook=row.hook, error=reason)
        else:
            self._quarantined_now += 1
            log.error("audit_row_quarantined", card=row.card_uuid, rule=row.rule_id, error=reason)

    async def _maybe_purge(self) -> None:
        if self.retention_days <= 0 or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY
        try:
            await self._ensure_ready()
            deleted = await self.store.purge(datetime.now(UTC) - timedelta(days=self.retention_days))
        except StoreError as exc:
            log.warning("audit_purge_failed", error=str(exc))
            return
        if deleted:
            log.info("audit_purged", rows=deleted, retention_days=self.retention_days)

    def _log_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log >= 30.0:  # an outage must not flood the log
            self._last_failure_log = now
            log.error("audit_write_failed", error=str(exc) if isinstance(exc, StoreError) else type(exc).__name__,
                      queued=self._queued_rows)

    # ------------------------------------------------------------------ metrics
    def _count(self, what: str, label: str, n: int) -> None:
        metrics = self._metrics()
        if metrics is not None and n:
            getattr(metrics, what)(label, n)

    def _gauge_queue(self) -> None:
        metrics = self._metrics()
        if metrics is not None:
            metrics.audit_queue_depth(self._queued_rows)

    @property
    def queued(self) -> int:
        return self._queued_rows


def install(app, settings) -> None:
    from cds_service.store import open_store
    from cds_service.store.deferred import DeferredStore

    store = DeferredStore(lambda: open_store(settings), label="audit store")
    secret = load_secret(settings.patient_key_secret, settings.data_dir)
    if settings.database_url and not settings.patient_key_secret:
        log.warning("patient_key_secret_not_shared",
                    hint="set CDS_PATIENT_KEY_SECRET to the same value on every instance sharing the database")
    writer = AuditWriter(store, secret, metrics=lambda: getattr(app.state, "metrics", None),
                         retention_days=settings.audit_retention_days,
                         rule_versions=list(app.state.rule_versions.values()))
    app.state.audit = writer
    app.state.startup_hooks.append(writer.start_in_background)
    app.state.shutdown_hooks.append(writer.stop)
