"""Pending launches: what ``/smart/callback`` needs from ``/smart/launch``, kept single-use for a short time.

A launch stores one opaque, encrypted blob under a digest of its ``state``; the callback takes it back,
and taking it removes it (atomically: ``GETDEL`` in Redis, a dict ``pop`` in memory), so a replayed
callback finds nothing. The blob is sealed with a key that only the browser's cookie holds
(:mod:`cds_service.smart.session`): whoever reads this store learns nothing usable, neither ``state``
nor the PKCE verifier. In memory for one process; in Redis (``CDS_REDIS_URL``) for several instances.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from cds_service.config import Settings

PREFIX = "cds:smart:launch:"


class PendingUnavailable(Exception):
    """The store could not answer (Redis is down): the launch fails with a 503, never silently."""


class PendingLaunches(ABC):
    @abstractmethod
    async def put(self, key: str, blob: bytes, ttl_seconds: int) -> None:
        """Keep ``blob`` under ``key`` for ``ttl_seconds``."""

    @abstractmethod
    async def take(self, key: str) -> bytes | None:
        """The blob under ``key``, removed in the same step; None when absent, taken already or expired."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (application shutdown)."""


class MemoryPendingLaunches(PendingLaunches):
    """Bounded: past ``max_entries`` the oldest pending launch is dropped (its callback then fails cleanly)."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, key: str, blob: bytes, ttl_seconds: int) -> None:
        now = self._clock()
        while self._items:  # insertion order is expiry order (one TTL per process)
            oldest_key, (until, _) = next(iter(self._items.items()))
            if until > now and len(self._items) < self.max_entries:
                break
            del self._items[oldest_key]
        self._items[key] = (now + ttl_seconds, blob)

    async def take(self, key: str) -> bytes | None:
        item = self._items.pop(key, None)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]


class RedisPendingLaunches(PendingLaunches):
    def __init__(self, client: Redis, *, owns_client: bool = False, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client

    async def put(self, key: str, blob: bytes, ttl_seconds: int) -> None:
        from redis.exceptions import RedisError

        try:
            await self.client.set(self.prefix + key, blob, ex=max(1, int(ttl_seconds)))
        except (RedisError, OSError) as exc:
            raise PendingUnavailable(type(exc).__name__) from exc

    async def take(self, key: str) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            return await self.client.getdel(self.prefix + key)
        except (RedisError, OSError) as exc:
            raise PendingUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def make_pending_launches(settings: Settings) -> PendingLaunches:
    """Redis when ``CDS_REDIS_URL`` is set (every instance sees every launch), else in-process."""
    if settings.redis_url:
        from cds_service.replay.redis import connect

        return RedisPendingLaunches(connect(settings.redis_url), owns_client=True)
    return MemoryPendingLaunches()
