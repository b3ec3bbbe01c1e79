"""JWT ``jti`` replay caches: in-process (one instance) or Redis (``CDS_REDIS_URL``, several instances)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cds_service.replay.base import ReplayCache, ReplayCacheUnavailable
from cds_service.replay.memory import MemoryReplayCache

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from cds_service.config import Settings

__all__ = ["MemoryReplayCache", "ReplayCache", "ReplayCacheUnavailable", "make_replay_cache"]


def make_replay_cache(settings: Settings, redis: Redis | None = None) -> ReplayCache:
    """Redis when ``CDS_REDIS_URL`` is set (pass a shared client to reuse its pool), else in-process."""
    if redis is not None or settings.redis_url:
        from cds_service.replay.redis import RedisReplayCache

        if redis is not None:
            return RedisReplayCache(redis)
        return RedisReplayCache.from_url(settings.redis_url)
    return MemoryReplayCache()
