"""Replay cache in Redis, shared by every instance of the service.

Each sighting is one ``EVALSHA`` of a Lua script (one round trip, atomic): it records the ``jti`` with
``SET key value NX EX ttl`` and reads the deployment's *memory marker*, a key holding the time from which
Redis has remembered every ``jti``. The marker has no expiry, so it vanishes only with the data around it:
a Redis restarted without persistence, ``FLUSHALL``/``FLUSHDB``, an empty server behind the same URL.
The first sighting that finds it missing sets it to the current time, so every instance sees the same
moment at once, and the authenticator refuses tokens that could have been used before it
(:attr:`ReplayCache.remembers_since`; see docs/security.md, "Replay protection"). The script costs a few
tens of microseconds more than a bare ``SET key 1 NX EX ttl``, small beside verifying and answering the call.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from cds_service import logs
from cds_service.replay.base import ReplayCache, ReplayCacheUnavailable

PREFIX = "cds:jti:"
MARKER = "memory-since"  # after the prefix; never a jti key (those are 64 hex digits)

log = logs.get_logger("cds_service.replay")

# KEYS[1] the jti key, KEYS[2] the memory marker; ARGV[1] the ttl, ARGV[2] the caller's time, ARGV[3] a value
# unique to this sighting, so that a retry of the same sighting (the reply was lost) is not taken for a replay.
# Returns {1 if the jti was new else 0, the marker's time, 1 if this call set the marker else 0}.
_SIGHTING = """
local since = redis.call('GET', KEYS[2])
local created = 0
if not since then
  redis.call('SET', KEYS[2], ARGV[2])
  since = ARGV[2]
  created = 1
end
local added = redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[1])
if not added and redis.call('GET', KEYS[1]) == ARGV[3] then
  added = true
end
return {added and 1 or 0, since, created}
"""

def redis_key(issuer: str, jti: str, prefix: str = PREFIX) -> str:
    # Hashed: the jti is chosen by the caller, so its length and bytes never reach Redis directly.
    digest = hashlib.sha256(issuer.encode() + b"\0" + jti.encode()).hexdigest()
    return prefix + digest


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class RedisReplayCache(ReplayCache):
    def __init__(self, client: Redis, *, prefix: str = PREFIX, owns_client: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.marker = prefix + MARKER
        self._owns_client = owns_client
        self._clock = clock
        self._sha = hashlib.sha1(_SIGHTING.encode()).hexdigest()
        self.remembers_since = 0.0

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX) -> RedisReplayCache:
        return cls(connect(url), prefix=prefix, owns_client=True)

    async def seen(self, jti: str, issuer: str, ttl_seconds: int) -> bool:
        sighting = (2, redis_key(issuer, jti, self.prefix), self.marker, max(1, int(ttl_seconds)),
                    repr(self._clock()), secrets.token_hex(8))
        try:
            try:
                added, since, created = await self.client.evalsha(self._sha, *sighting)
            except NoScriptError:  # a Redis that has restarted since: load the script and ask again
                self._sha = await self.client.script_load(_SIGHTING)
                added, since, created = await self.client.evalsha(self._sha, *sighting)
        except (RedisError, OSError) as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc
        try:
            since = float(since)
            if not math.isfinite(since):
                raise ValueError(since)
        except (TypeError, ValueError):  # a marker overwritten with something else: memory starts now
            since, created = await self._reset_marker(), True
        self._note(since, bool(created))
        return not added

    def _note(self, since: float, created: bool) -> None:
        """Keep :attr:`remembers_since` (never moving back) and say once when Redis lost its memory."""
        if since <= self.remembers_since:
            return
        if created or self.remembers_since:  # this call set it, or another instance did after a loss
            log.warning("replay_cache_memory_lost", since=_iso(since),
                        detail="Redis had no replay-memory marker (first use, or its data was lost): tokens "
                               "issued before this moment are refused, as their jti may have been forgotten")
        self.remembers_since = since

    async def _reset_marker(self) -> float:
        now = self._clock()
        try:
            await self.client.set(self.marker, repr(now))
        except (RedisError, OSError) as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc
        return now

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def connect(url: str) -> Redis:
    """A client with short timeouts: a hung Redis must not hang authentication.

    A command that meets a closed connection (a pooled connection to a Redis that has restarted since) is
    sent once more, at once, on a new one; a timeout is not retried, so a hung Redis still costs one timeout.
    """
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30,
                          retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
