"""JWT jti replay caches (cds_service.replay): in-process and Redis, each an atomic add-if-absent with expiry."""

from __future__ import annotations

import asyncio
import os
import time
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
    from cds_service.replay.redis import MARKER, PREFIX
    from tests.auth_support import JWKS_URL, SELECT_ID, Keys, hook_body, trusted

    keys = Keys()
    shared = redis.Redis.from_url(REDIS_URL)
    # The JWKS document and refresh lock are keyed by URL; start clean so a rerun within 30 s is not skewed.
    stale = [shared_key(prefix, JWKS_URL) for prefix in (_REDIS_DOC, _REDIS_LOCK)]
    shared.delete(*stale)
    # A Redis never used by the service has no replay-memory marker: its first use refuses tokens issued
    # before it for the leeway (tested below with a private server); this one has been in use for a day.
    shared.set(PREFIX + MARKER, repr(time.time() - 86400))
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


# --------------------------------------------------------------------------- lost memory (Redis restarted empty)
@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_redis_cache_marks_when_its_memory_starts_and_notices_when_it_is_lost(redis_cache, capfd):
    before = time.time()
    await redis_cache.seen("j1", "iss", 300)
    first = redis_cache.remembers_since
    assert before <= first <= time.time()  # first use: memory starts now
    await redis_cache.seen("j2", "iss", 300)
    assert redis_cache.remembers_since == first  # the marker stays put while Redis keeps its data
    capfd.readouterr()
    # what a restart without persistence (or a FLUSHDB) leaves behind: no keys at all
    keys = [k async for k in redis_cache.client.scan_iter(match=redis_cache.prefix + "*")]
    await redis_cache.client.delete(*keys)
    assert await redis_cache.seen("j1", "iss", 300) is False  # forgotten...
    assert redis_cache.remembers_since > first  # ...and the cache says so, in the same round trip
    assert "replay_cache_memory_lost" in capfd.readouterr().err


@pytest.mark.redis
@pytest.mark.skipif(_REDIS_MISSING is not None, reason=_REDIS_MISSING or "")
async def test_a_junk_memory_marker_counts_as_lost_memory(redis_cache):
    await redis_cache.client.set(redis_cache.marker, "not a time")
    before = time.time()
    assert await redis_cache.seen("j", "iss", 300) is False
    assert redis_cache.remembers_since >= before
    assert float(await redis_cache.client.get(redis_cache.marker)) == redis_cache.remembers_since


def _memory_lost(client, seconds_ago: float) -> None:
    """The app's replay cache says its memory starts ``seconds_ago`` (as after a Redis restart)."""
    client.app.state.authenticator.replay.remembers_since = time.time() - seconds_ago


@pytest.fixture
def auth_client(tmp_path):
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from tests.auth_support import JWKS_URL, Keys, trusted

    keys = Keys()
    settings = Settings(data_dir=tmp_path, trusted_issuers=trusted(), redis_url=None, database_url=None)
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        with TestClient(create_app(settings)) as client:
            client.keys = keys
            yield client


def _call(client, token):
    from tests.auth_support import SELECT_ID, hook_body

    return client.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers={"Authorization": f"Bearer {token}"})


def test_a_token_issued_before_the_memory_loss_gets_503_while_a_fresh_one_could_not_exist_yet(auth_client):
    _memory_lost(auth_client, 5)  # default leeway 30 s: a token issued up to 25 s from now may be a replay
    token = auth_client.keys.token(now=time.time() - 60)
    first = _call(auth_client, token)
    assert first.status_code == 503
    assert 20 <= int(first.headers["Retry-After"]) <= 26  # when a freshly minted token will pass
    assert first.json()["resourceType"] == "OperationOutcome"
    again = _call(auth_client, token)  # the same token retried: the same answer, not "replayed"
    assert again.status_code == 503


def test_after_the_window_an_old_token_is_401_and_a_fresh_token_is_accepted(auth_client):
    import re
    _memory_lost(auth_client, 100)  # lost 100 s ago: tokens issued after 70 s ago cannot have been seen before
    now = time.time()
    old = auth_client.keys.token(now=now - 90)
    assert _call(auth_client, old).status_code == 401
    metrics = auth_client.get("/metrics").text
    assert re.search(r'cds_auth_failures_total\{reason="replay-memory-lost"\} 1\.0', metrics)
    assert _call(auth_client, auth_client.keys.token(now=now - 60)).status_code == 200
    assert _call(auth_client, auth_client.keys.token()).status_code == 200


def test_without_a_known_loss_nothing_changes(auth_client):
    assert auth_client.app.state.authenticator.replay.remembers_since == 0.0  # in-process: no marker
    token = auth_client.keys.token(now=time.time() - 200)
    assert _call(auth_client, token).status_code == 200
    assert _call(auth_client, token).status_code == 401  # and a replay is still a replay


# --------------------------------------------------------------------------- a private Redis, restarted
def _redis_server_missing() -> str | None:
    from tests.faults.harness import binary

    return None if binary("redis-server") else "redis-server is not installed"


@pytest.mark.redis
@pytest.mark.skipif(_redis_server_missing() is not None, reason=_redis_server_missing() or "")
@pytest.mark.parametrize("persistent", [False, True], ids=["no-persistence", "appendonly"])
def test_a_redis_restart_never_lets_a_used_token_in_again(tmp_path, persistent):
    """A private redis-server is stopped and started again: empty (no persistence) or with its data (AOF).

    While it is down, calls fail closed (503, Retry-After). Afterwards a token used before the restart is
    refused either way; a fresh token is accepted, at once with persistence, and after the leeway (1 s here)
    when Redis came back empty."""
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from tests.auth_support import JWKS_URL, Keys, trusted
    from tests.faults.harness import PrivateRedis

    keys = Keys()
    (tmp_path / "redis").mkdir()
    with PrivateRedis(tmp_path / "redis", persistent=persistent) as redis, \
            respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        settings = Settings(data_dir=tmp_path / "data", trusted_issuers=trusted(), redis_url=redis.url,
                            database_url=None, jwt_leeway_seconds=1)
        with TestClient(create_app(settings)) as client:
            replay = client.app.state.authenticator.replay

            def wait_past_window() -> None:
                # a fresh token's iat (whole seconds) must reach remembers_since + leeway
                while int(time.time()) < replay.remembers_since + 1:
                    time.sleep(0.1)

            # First use of this Redis: it has no marker, so its memory starts now.
            early = keys.token()
            assert _call(client, early).status_code == 503
            wait_past_window()
            used = keys.token()
            assert _call(client, used).status_code == 200
            assert _call(client, used).status_code == 401  # replayed
            started = replay.remembers_since

            redis.stop()
            t = time.monotonic()
            down = _call(client, keys.token())
            assert down.status_code == 503 and down.headers["Retry-After"] == "5"  # fails closed...
            assert time.monotonic() - t < 3  # ...within the 1 s socket timeout (plus a margin for this machine)
            redis.start()
            replayed = _call(client, used)
            if persistent:  # the jti survived: a plain replay, and no window for anyone
                assert replayed.status_code == 401
                assert replay.remembers_since == started
                assert _call(client, keys.token()).status_code == 200
            else:  # the jti is forgotten; the marker is gone too, so the token is refused by its iat
                assert replayed.status_code == 503 and replayed.headers["Retry-After"]
                assert replay.remembers_since > started
                while time.time() < replay.remembers_since + 2:  # the window (leeway after the marker) ends
                    time.sleep(0.1)
                assert _call(client, used).status_code == 401
                wait_past_window()
                assert _call(client, keys.token()).status_code == 200
