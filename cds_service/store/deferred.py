"""A store opened on first use, in a worker thread: the service does not wait for it to start serving.

Opening a store imports SQLAlchemy and the database driver and builds the engine (a large share of the
time from exec to the first answered hook call). The audit writer queues rows until the store is open, so
nothing is lost; ``/ready`` and feedback, which await the store, open it when they first need it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from cds_service.store.base import CallRow, CardRow, FeedbackRow, RuleReport, RuleVersionRow, Store


class DeferredStore(Store):
    def __init__(self, open_store: Callable[[], Store], label: str = "store") -> None:
        self._open = open_store
        self._label = label
        self._store: Store | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return repr(self._store) if self._store is not None else f"DeferredStore({self._label})"

    async def _get(self) -> Store:
        if self._store is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._store is None:
                    self._store = await asyncio.to_thread(self._open)
        return self._store

    async def record_cards(self, rows: Sequence[CardRow]) -> int:
        return await (await self._get()).record_cards(rows)

    async def record_calls(self, rows: Sequence[CallRow]) -> int:
        return await (await self._get()).record_calls(rows)

    async def record_audit(self, rows: Sequence[CardRow | CallRow]) -> int:
        return await (await self._get()).record_audit(rows)

    async def record_rule_versions(self, rows: Sequence[RuleVersionRow]) -> int:
        """Rule versions seen, for stores that keep them (the SQL stores); others keep nothing."""
        record = getattr(await self._get(), "record_rule_versions", None)
        return await record(rows) if record is not None else 0

    async def rule_version_history(self) -> list[RuleVersionRow]:
        history = getattr(await self._get(), "rule_version_history", None)
        return await history() if history is not None else []

    async def governance_rows(self, since: datetime | None, until: datetime | None) -> dict[str, list]:
        return await (await self._get()).governance_rows(since, until)  # type: ignore[attr-defined]

    async def record_feedback(self, items: Sequence[FeedbackRow]) -> int:
        return await (await self._get()).record_feedback(items)

    async def report(self, since: datetime | None, until: datetime | None) -> list[RuleReport]:
        return await (await self._get()).report(since, until)

    async def purge(self, before: datetime) -> int:
        return await (await self._get()).purge(before)

    async def ping(self) -> None:
        await (await self._get()).ping()

    async def upgrade(self) -> None:
        await (await self._get()).upgrade()

    async def revision(self) -> str | None:
        return await (await self._get()).revision()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
