"""JWKS retrieval and caching: only configured URLs, rate-limited refresh, optionally shared through Redis.

* Only URLs from ``CDS_TRUSTED_ISSUERS`` are ever fetched (a token's ``jku`` is checked against them
  before it gets here), over https (http only to loopback), without redirects, with a timeout and a
  size limit.
* An unknown ``kid`` triggers a refresh (key rotation), but at most once per ``min_refetch`` seconds per
  URL, so a flood of tokens with random ``kid`` values cannot turn us into a traffic amplifier.
* Keys older than ``max_age`` are refreshed on use; if the refresh fails the old keys keep working
  (an unreachable JWKS endpoint must not stop a working integration) and the failure is logged.
* With Redis (``CDS_REDIS_URL``) the fetched documents and the refresh rate limit are shared, so N
  instances make one JWKS request per rotation instead of N.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson

from cds_service import logs
from cds_service.auth.issuers import IssuerConfig, check_jwks_url

log = logs.get_logger("cds_service.auth")

ALLOWED_ALGORITHMS = ("ES384", "RS384")
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
MIN_RSA_BITS = 2048
_REDIS_DOC = "cds:jwks:doc:"
_REDIS_LOCK = "cds:jwks:fetch:"


class JwksUnavailable(Exception):
    """No keys could be obtained for a URL (never fetched successfully and the fetch failed now)."""


class KeyRefused(Exception):
    """The JWK exists but does not fit the token's algorithm (type, curve, size, use)."""


def shared_key(prefix: str, url: str) -> str:
    """Redis key for a JWKS URL's shared document (``_REDIS_DOC``) or refresh lock (``_REDIS_LOCK``)."""
    return prefix + hashlib.sha256(url.encode()).hexdigest()


def build_key(jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
    """A verification key bound to exactly ``alg``.

    Binding the algorithm here is the algorithm-confusion guard: PyJWT refuses a token whose header
    ``alg`` differs from the PyJWK's, and only asymmetric algorithms can ever be bound.
    """
    if alg not in ALLOWED_ALGORITHMS:
        raise KeyRefused(f"algorithm {alg!r} is not accepted")
    kty = jwk.get("kty")
    if alg == "ES384" and (kty != "EC" or jwk.get("crv") != "P-384"):
        raise KeyRefused("ES384 needs an EC P-384 key")
    if alg == "RS384" and kty != "RSA":
        raise KeyRefused("RS384 needs an RSA key")
    if jwk.get("alg") not in (None, alg):
        raise KeyRefused("the key is published for another algorithm")
    if jwk.get("use") not in (None, "sig"):
        raise KeyRefused("the key is not a signature key")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeyRefused("the key may not be used to verify")
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
    try:
        key = jwt.PyJWK(public, algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise KeyRefused(f"the key cannot be read ({type(exc).__name__})") from exc
    if alg == "RS384" and key.key.key_size < MIN_RSA_BITS:
        raise KeyRefused(f"RSA key shorter than {MIN_RSA_BITS} bits")
    return key


def _index(doc: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' array)")
    out: dict[str, dict[str, Any]] = {}
    for jwk in doc["keys"][:MAX_KEYS]:
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            out.setdefault(jwk["kid"], jwk)
    return out


@dataclass
class _Entry:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float | None = None  # wall clock (shared through Redis), None = never fetched
    attempted_at: float = float("-inf")  # monotonic; drives the local rate limit
    built: dict[tuple[str, str], jwt.PyJWK] = field(default_factory=dict)


class JwksCache:
    def __init__(
        self,
        http: Callable[[], httpx.AsyncClient],
        *,
        redis: Any = None,
        min_refetch_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        timeout_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self.redis = redis
        self.min_refetch = min_refetch_seconds
        self.max_age = max_age_seconds
        self.timeout = timeout_seconds
        self._clock = clock
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pinned: dict[tuple[str, str, str], jwt.PyJWK] = {}
        self.fetches = 0  # outbound JWKS requests made (tests and diagnostics)

    async def key(self, issuer: IssuerConfig, kid: str, alg: str, jku: str | None) -> jwt.PyJWK | None:
        """The key ``kid`` of ``issuer`` bound to ``alg``; None when no allowed JWKS has it.

        Raises :class:`KeyRefused` when the key exists but does not fit ``alg``, and
        :class:`JwksUnavailable` when no JWKS could be had at all.
        """
        if issuer.pinned_jwks is not None:
            cache_key = (issuer.issuer, kid, alg)
            built = self._pinned.get(cache_key)
            if built is None:
                jwk = _index(issuer.pinned_jwks).get(kid)
                if jwk is None:
                    return None
                built = self._pinned[cache_key] = build_key(jwk, alg)  # key parsing costs ~0.3 ms
            return built
        urls = [jku] if jku else list(issuer.jwks_urls)
        unavailable: JwksUnavailable | None = None
        for url in urls:
            try:
                entry = await self._entry_with(url, kid)
            except JwksUnavailable as exc:
                unavailable = exc
                continue
            jwk = entry.keys.get(kid)
            if jwk is not None:
                cached = entry.built.get((kid, alg))
                if cached is None:
                    cached = entry.built[(kid, alg)] = build_key(jwk, alg)
                return cached
        if unavailable is not None:
            raise unavailable
        return None

    # ------------------------------------------------------------------ internals
    def _fresh(self, entry: _Entry) -> bool:
        return entry.fetched_at is not None and self._wall() - entry.fetched_at < self.max_age

    async def _entry_with(self, url: str, kid: str) -> _Entry:
        entry = self._entries.setdefault(url, _Entry())
        if kid in entry.keys and self._fresh(entry):
            return entry
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:  # concurrent requests with the same new kid make one fetch, not many
            if kid in entry.keys and self._fresh(entry):
                return entry
            now = self._clock()
            if now - entry.attempted_at < self.min_refetch:
                return self._or_stale(entry, url)
            entry.attempted_at = now
            if await self._load_shared(url, entry) and kid in entry.keys and self._fresh(entry):
                return entry
            if not await self._acquire_shared_fetch(url):
                # Another instance fetched within min_refetch (or is fetching right now): use its result.
                # Wait only if its result is not in Redis yet (nothing fetched within min_refetch).
                recent = entry.fetched_at is not None and self._wall() - entry.fetched_at < self.min_refetch
                if kid not in entry.keys and not recent:
                    await self._wait_shared(url, entry)
                return self._or_stale(entry, url)
            try:
                keys = await self._fetch(url)
            except JwksUnavailable:
                return self._or_stale(entry, url)
            entry.keys, entry.fetched_at, entry.built = keys, self._wall(), {}
            await self._store_shared(url, keys, entry.fetched_at)
            return entry

    def _or_stale(self, entry: _Entry, url: str) -> _Entry:
        if entry.fetched_at is None:
            raise JwksUnavailable(url)
        return entry

    async def _fetch(self, url: str) -> dict[str, dict[str, Any]]:
        check_jwks_url(url, "jku")  # config was validated; this guards any future caller
        self.fetches += 1
        try:
            async with self._http().stream("GET", url, headers={"Accept": "application/json"},
                                           timeout=httpx.Timeout(self.timeout), follow_redirects=False) as resp:
                if resp.status_code != 200:
                    raise ValueError(f"HTTP {resp.status_code}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            keys = _index(orjson.loads(bytes(body)))
        except (httpx.HTTPError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            log.error("jwks_fetch_failed", url=url, error=reason[:200])
            raise JwksUnavailable(url) from exc
        log.info("jwks_fetched", url=url, keys=len(keys))
        return keys

    # Redis sharing: failures only cost a local fetch, never an authentication failure.
    async def _load_shared(self, url: str, entry: _Entry) -> bool:
        if self.redis is None:
            return False
        try:
            raw = await self.redis.get(shared_key(_REDIS_DOC, url))
            if not raw:
                return False
            doc = orjson.loads(raw)
            fetched_at = float(doc["fetched_at"])
            keys = _index(doc["jwks"])
        except Exception as exc:  # noqa: BLE001 - Redis down or garbage: fall back to fetching
            log.warning("jwks_shared_cache_unreadable", error=type(exc).__name__)
            return False
        if entry.fetched_at is None or fetched_at > entry.fetched_at:
            entry.keys, entry.fetched_at, entry.built = keys, fetched_at, {}
        return True

    async def _wait_shared(self, url: str, entry: _Entry) -> None:
        before = entry.fetched_at
        for _ in range(max(1, int(self.timeout / 0.05))):
            await asyncio.sleep(0.05)
            await self._load_shared(url, entry)
            if entry.fetched_at != before:
                return

    async def _acquire_shared_fetch(self, url: str) -> bool:
        if self.redis is None:
            return True
        try:
            return bool(await self.redis.set(shared_key(_REDIS_LOCK, url), b"1", nx=True,
                                             ex=max(1, int(self.min_refetch))))
        except Exception as exc:  # noqa: BLE001
            log.warning("jwks_shared_cache_unreachable", error=type(exc).__name__)
            return True

    async def _store_shared(self, url: str, keys: dict[str, dict[str, Any]], fetched_at: float) -> None:
        if self.redis is None:
            return
        doc = orjson.dumps({"fetched_at": fetched_at, "jwks": {"keys": list(keys.values())}})
        try:
            await self.redis.set(shared_key(_REDIS_DOC, url), doc, ex=max(1, int(self.max_age * 24)))
        except Exception as exc:  # noqa: BLE001
            log.warning("jwks_shared_cache_unreachable", error=type(exc).__name__)
