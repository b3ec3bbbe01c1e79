"""The audit and feedback store: one interface, several implementations (see ``store/__init__.py``).

Rows are plain frozen dataclasses so the audit writer can build them on the request path without touching
SQLAlchemy, and so another backend (a message queue, a warehouse loader) only has to implement
:class:`Store`. Patient identifiers never reach a row: ``patient_key`` is already a keyed hash.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

# Feedback for a card this store never saw (issued before a purge, by another deployment, or a
# client replaying old uuids) is reported under this rule id instead of being silently dropped.
UNKNOWN_RULE = "unknown"
# An overridden outcome that names no reason is counted under this code.
NO_REASON = "unspecified"


@dataclass(frozen=True, slots=True)
class CardRow:
    card_uuid: str
    service: str
    hook: str
    rule_id: str
    indicator: str
    hook_instance: str
    issued_at: datetime
    patient_key: str | None
    shadow: bool = False  # computed and kept for analytics, never returned to the EHR (rule in shadow mode)
    rule_version: str | None = None  # digest of what the rule read (cds_service.governance.versions)


@dataclass(frozen=True, slots=True)
class CallRow:
    """One hook call, whatever it answered: the denominator of every alert rate. No patient, no user."""

    call_id: str
    service: str
    hook: str
    called_at: datetime
    status: int  # HTTP status of the answer
    cards_critical: int = 0
    cards_warning: int = 0
    cards_info: int = 0
    shadow_cards: int = 0
    duration_ms: float = 0.0
    ladder_orders: int = 0  # orders of the call that are ladder drugs (glucocorticoid, second line, anti-TNF)
    ig_orders: int = 0  # orders of the call that are immune globulin (IVIG or SCIG)


@dataclass(frozen=True, slots=True)
class RuleVersionRow:
    """A version of a rule as first seen by a running service: its digest and what it was made of."""

    rule_id: str
    version: str
    first_seen: datetime
    inputs: dict[str, Any]  # {"cards": digest, "thresholds": {name: value}, "value_sets": {name: digest}}


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    card_uuid: str
    service: str
    outcome: str  # "accepted" | "overridden"
    outcome_at: datetime  # normalised to UTC: the idempotency key uses the instant, not its spelling
    received_at: datetime
    accepted_suggestions: tuple[str, ...] = ()
    reason_code: str | None = None
    reason_system: str | None = None
    reason_display: str | None = None
    user_comment: str | None = None

    @property
    def key(self) -> tuple[str, str, datetime]:
        return self.card_uuid, self.outcome, self.outcome_at


@dataclass
class RuleReport:
    """Override analytics for one rule over a period (cards issued in the period, and their feedback)."""

    rule: str
    shown: int = 0
    accepted: int = 0
    overridden: int = 0
    override_reasons: dict[str, int] = field(default_factory=dict)
    reason_displays: dict[str, str] = field(default_factory=dict)

    @property
    def override_rate(self) -> float | None:
        return round(self.overridden / self.shown, 4) if self.shown else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "shown": self.shown,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "override_rate": self.override_rate,
            "override_reasons": dict(sorted(self.override_reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


class StoreError(Exception):
    """The store could not do what was asked (unreachable, not migrated, ...). The message is safe to log."""


class Store(abc.ABC):
    """Where issued cards and clinician feedback are kept."""

    @abc.abstractmethod
    async def record_cards(self, rows: Sequence[CardRow]) -> int:
        """Store issued cards in one transaction; a card uuid already stored is skipped. Returns rows added."""

    async def record_calls(self, rows: Sequence[CallRow]) -> int:
        """Store hook-call rows (idempotent on call id). A store that keeps no denominators keeps nothing."""
        return 0

    async def record_audit(self, rows: Sequence[CardRow | CallRow]) -> int:
        """Store a batch of card and call rows (the audit writer's one write). Returns rows added."""
        cards = [r for r in rows if isinstance(r, CardRow)]
        calls = [r for r in rows if isinstance(r, CallRow)]
        added = await self.record_cards(cards) if cards else 0
        if calls:
            added += await self.record_calls(calls)
        return added

    @abc.abstractmethod
    async def record_feedback(self, items: Sequence[FeedbackRow]) -> int:
        """Store feedback idempotently on (card uuid, outcome, outcome time). Returns rows added."""

    @abc.abstractmethod
    async def report(self, since: datetime | None, until: datetime | None) -> list[RuleReport]:
        """Per rule: cards issued in [since, until) and the feedback on them, most shown first."""

    @abc.abstractmethod
    async def purge(self, before: datetime) -> int:
        """Delete cards issued and feedback received before ``before``. Returns rows deleted."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreError` when the store cannot be reached."""

    @abc.abstractmethod
    async def upgrade(self) -> None:
        """Bring the schema to the latest version (idempotent, safe when several processes start at once)."""

    @abc.abstractmethod
    async def revision(self) -> str | None:
        """The schema version in the store, or None when it was never initialised."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


def dedupe_feedback(items: Iterable[FeedbackRow]) -> list[FeedbackRow]:
    """Drop repeats inside one batch (clients may send the same item twice in one POST)."""
    seen: set[tuple[str, str, datetime]] = set()
    out = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # seen: a write nobody waits for any more must not be logged as "never retrieved"


async def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in its own task, shielded: cancelling the caller stops the wait, never the write.

    A transaction cancelled half-way can hand its connection back inside an open transaction that
    still holds the database's write lock; every store write goes through here instead."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)
