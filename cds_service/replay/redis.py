"""Replay cache in Redis (``SET key 1 NX EX ttl``), shared by every instance of the service."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cds_service.replay.base import ReplayCache, ReplayCacheUnavailable

PREFIX = "cds:jti:"


def redis_key(issuer: str, jti: str, prefix: str = PREFIX) -> str:
    # Hashed: the jti is chosen by the caller, so its length and bytes never reach Redis directly.
    digest = hashlib.sha256(issuer.encode() + b"\0" + jti.encode()).hexdigest()
    return prefix + digest


class RedisReplayCache(ReplayCache):
    def __init__(self, client: Redis, *, prefix: str = PREFIX, owns_client: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX) -> RedisReplayCache:
        return cls(connect(url), prefix=prefix, owns_client=True)

    async def seen(self, jti: str, issuer: str, ttl_seconds: int) -> bool:
        try:
            added = await self.client.set(redis_key(issuer, jti, self.prefix), b"1", nx=True,
                                          ex=max(1, int(ttl_seconds)))
        except (RedisError, OSError) as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc
        return not added

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def connect(url: str) -> Redis:
    """A client with short timeouts: a hung Redis must not hang authentication."""
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30)
