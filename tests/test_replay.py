"""JWT jti replay caches (cds_service.replay): in-process and Redis, each an atomic add-if-absent with expiry."""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx
import pytest
import respx

from cds_service.config import Settings
from cds_service.replay import MemoryReplayCache, ReplayCacheUnavailable, make_replay_cache

REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_reachable() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}); set CDS_TEST_REDIS_URL"
    return None


_REDIS_MISSING = _redis_reachable()


# --------------------------------------------------------------------------- in-process
async def test_memory_cache_reports_a_second_sighting():
    cache = MemoryReplayCache()
    assert await cache.seen("j1", "iss", 300) is False
    assert await cache.seen("j1", "iss", 300) is True
    assert await cache.seen("j2", "iss", 300) is False


async def test_memory_cache_keys_by_issuer():
    cache = MemoryReplayCache()
    assert await cache.seen("j1", "https://a", 300) is False
    assert await cache.seen("j1", "https://b", 300) is False


async def test_memory_cache_forgets_after_the_ttl():
    now = [100.0]
    cache = MemoryReplayCache(clock=lambda: now[0])
    await cache.seen("j1", "iss", 60)
    now[0] += 59
    assert await cache.seen("j1", "iss", 60) is True
    now[0] += 2
    assert await cache.seen("j1", "iss", 60) is False  # expired, so recorded afresh
    assert len(cache) == 1


async def test_memory_cache_is_bounded_and_drops_the_soonest_to_expire():
    now = [0.0]
    cache = MemoryReplayCache(max_entries=3, clock=lambda: now[0])
    await cache.seen("short", "iss", 10)
    await cache.seen("long-1", "iss", 300)
    await cache.seen("long-2", "iss", 300)
    await cache.seen("long-3", "iss", 300)  # full: "short" is evicted, not a long-lived one
    assert len(cache) == 3
    assert await cache.seen("long-1", "iss", 300) is True
    assert await cache.seen("short", "iss", 10) is False


async def test_memory_cache_purges_expired_entries_as_time_passes():
    now = [0.0]
    cache = MemoryReplayCache(clock=lambda: now[0])
    for i in range(1000):
        await cache.seen(f"j{i}", "iss", 30)
    now[0] += 31
    await cache.seen("new", "iss", 30)
    assert len(cache) == 1


async def test_concurrent_sightings_of_one_jti_admit_exactly_one():
    cache = MemoryReplayCache()
    results = await asyncio.gather(*(cache.seen("same", "iss", 300) for _ in range(50)))
    assert results.count(False) == 1


def test_factory_picks_memory_without_redis(tmp_path):
    settings = Settings(data_dir=tmp_path, redis_url=None, trusted_issuers={})
    assert isinstance(make_replay_cache(settings), MemoryReplayCache)


# --------------------------------------------------------------------------- Redis
@pytest.fixture
async def redis_cache():
    from cds_service.replay.redis import RedisReplayCache

    cache = RedisReplayCache.from_url(REDIS_URL, prefix=f"cds-test:{uuid.uuid4().hex}:")
    yield cache
    keys = [k async for k in cache.client.scan_iter(match=cache.prefix + "*")]
    if keys:
        await cache.client.delete(*keys)
    await cache.close()


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_redis_cache_reports_a_second_sighting(redis_cache):
    assert await redis_cache.seen("j1", "iss", 300) is False
    assert await redis_cache.seen("j1", "iss", 300) is True
    assert await redis_cache.seen("j1", "other-iss", 300) is False


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_redis_cache_sets_the_ttl_and_hashes_the_key(redis_cache):
    from cds_service.replay.redis import redis_key

    jti = "x" * 200 + "\n\x00"
    await redis_cache.seen(jti, "iss", 120)
    key = redis_key("iss", jti, redis_cache.prefix)
    assert len(key) == len(redis_cache.prefix) + 64  # the caller's bytes never become the key
    ttl = await redis_cache.client.ttl(key)
    assert 110 <= ttl <= 120


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_redis_cache_forgets_after_the_ttl(redis_cache):
    await redis_cache.seen("short", "iss", 1)
    await asyncio.sleep(1.2)
    assert await redis_cache.seen("short", "iss", 1) is False


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_redis_concurrent_sightings_admit_exactly_one(redis_cache):
    results = await asyncio.gather(*(redis_cache.seen("same", "iss", 300) for _ in range(30)))
    assert results.count(False) == 1


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
def test_two_instances_share_the_redis_replay_cache(tmp_path):
    """A token accepted by one instance is a replay at the other (the point of CDS_REDIS_URL)."""
    import redis
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.auth.jwks import _REDIS_DOC, _REDIS_LOCK, shared_key
    from tests.auth_support import JWKS_URL, SELECT_ID, Keys, hook_body, trusted

    keys = Keys()
    shared = redis.Redis.from_url(REDIS_URL)
    # The JWKS document and refresh lock are keyed by URL; start clean so a rerun within 30 s is not skewed.
    stale = [shared_key(prefix, JWKS_URL) for prefix in (_REDIS_DOC, _REDIS_LOCK)]
    shared.delete(*stale)
    settings = Settings(data_dir=tmp_path, trusted_issuers=trusted(), redis_url=REDIS_URL, database_url=None)
    token = keys.token()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
            assert a.app.state.authenticator.replay.__class__.__name__ == "RedisReplayCache"
            headers = {"Authorization": f"Bearer {token}"}
            assert a.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers=headers).status_code == 200
            assert b.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers=headers).status_code == 401
            # The JWKS fetched by instance a is shared through Redis: b made no request of its own...
            fresh = {"Authorization": f"Bearer {keys.token()}"}
            assert b.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers=fresh).status_code == 200
            assert b.app.state.authenticator.jwks.fetches == 0
    assert route.call_count == 1
    shared.delete(*stale)


async def test_unreachable_redis_raises_unavailable_so_auth_fails_closed():
    from cds_service.replay.redis import RedisReplayCache

    cache = RedisReplayCache.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ReplayCacheUnavailable):
        await cache.seen("j", "iss", 60)
    await cache.close()
