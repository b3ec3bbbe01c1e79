"""In-process replay cache: bounded and expiring. Right for a single process; use Redis for several."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from cds_service import logs
from cds_service.replay.base import ReplayCache

log = logs.get_logger("cds_service.replay")


class MemoryReplayCache(ReplayCache):
    """A dict of key -> expiry plus a min-heap of expiries for O(log n) purging.

    Only tokens whose signature already verified are recorded (the authenticator checks replay last),
    so only a trusted issuer can fill the cache. If it is full anyway, the entries closest to expiry
    are dropped first: they are the least useful to a replaying attacker, and refusing every new
    token instead would turn a busy EHR into an outage.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._warned_full = False

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if expiry.get(key) == at:  # a key re-added later has a newer expiry; keep it
                del expiry[key]

    async def seen(self, jti: str, issuer: str, ttl_seconds: int) -> bool:
        # No await inside: on one event loop this body runs atomically, which is the add-if-absent
        # guarantee the interface asks for.
        now = self._clock()
        self._purge(now)
        key = (issuer, jti)
        at = self._expiry.get(key)
        if at is not None and at > now:
            return True
        while len(self._expiry) >= self.max_entries and self._heap:
            _, old = heapq.heappop(self._heap)
            self._expiry.pop(old, None)
            if not self._warned_full:
                self._warned_full = True
                log.warning("replay_cache_full", max_entries=self.max_entries)
        until = now + max(1, ttl_seconds)
        self._expiry[key] = until
        heapq.heappush(self._heap, (until, key))
        return False
