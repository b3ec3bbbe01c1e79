"""Verify the CDS client's JWT (CDS Hooks 2.0.1 "Security and Safety",
https://cds-hooks.hl7.org/2.0/#security-and-safety).

Order of checks: cheap header and claim checks on the still-unverified token first (so an expired or
misaddressed token never costs a JWKS fetch), then the signature over exactly the bytes those claims were
decoded from, with a key from an allowed JWKS (so the checked claims are the signed ones), and the ``jti``
replay check last, so only tokens with a valid signature are ever recorded. Every refusal is
:class:`Unauthorized` whose reason is logged by the app and never sent to the caller; the token itself is
never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from starlette.requests import Request

from cds_service.auth.issuers import IssuerConfig
from cds_service.auth.jwks import ALLOWED_ALGORITHMS, JwksCache, JwksUnavailable, KeyRefused
from cds_service.errors import ServiceError, Unauthorized
from cds_service.replay import ReplayCache, ReplayCacheUnavailable

MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 256
MAX_KID_CHARS = 256
# The sandbox mints 300 s tokens; Epic's are short-lived too. A longer lifetime would pin its jti in the
# replay cache for that long, so anything over an hour is refused as implausible.
MAX_LIFETIME_SECONDS = 3600
_REQUIRED = ("iss", "aud", "exp", "iat", "jti")


class AuthUnavailable(ServiceError):
    """A dependency of authentication (JWKS endpoint, replay cache) is down: fail closed, retryable."""

    status, code = 503, "transient"

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__("Authentication is temporarily unavailable; try again shortly.",
                         headers={"Retry-After": str(max(1, retry_after))})
        self.reason = reason


@dataclass(frozen=True)
class TrustedClient:
    """The authenticated caller; ``fhir_allowed`` is its FHIR-server allow-list."""

    issuer: str
    jti: str
    config: IssuerConfig

    def fhir_allowed(self, url: str) -> bool:
        return self.config.fhir_allowed(url)


# A base64url segment: the URL-safe alphabet, at most two '=' of padding (some issuers pad), never a
# length of 4n+1. Python's decoder skips characters outside the alphabet, so it is checked first.
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The canonical last character of a segment of 4n+2 (4n+3) characters carries 4 (2) unused bits, all zero.
_CANONICAL_LAST = {2: frozenset(_ALPHABET[::16]), 3: frozenset(_ALPHABET[::4])}


def _b64decode(segment: str) -> bytes:
    """A JWS segment strictly: only the base64url alphabet, and only its canonical spelling (unused trailing
    bits zero), so each token has exactly one spelling and what is verified is what is read."""
    if not _B64URL.fullmatch(segment):
        raise ValueError("not base64url")
    stripped = segment.rstrip("=")
    tail = len(stripped) % 4
    if tail == 1 or (stripped != segment and len(segment) % 4):
        raise ValueError("bad base64url length or padding")
    if tail and stripped[-1] not in _CANONICAL_LAST[tail]:
        raise ValueError("non-canonical base64url")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def _short(value: Any, limit: int = 80) -> str:
    """For log reasons: attacker-chosen header values, bounded (never the token)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


@functools.lru_cache(maxsize=256)
def normalise_url(url: str) -> str | None:
    """scheme://host[:port]/path with scheme and host lower-cased and the default port dropped."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, {"http": 80, "https": 443}[scheme]) else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path}{query}"


class Authenticator:
    def __init__(
        self,
        issuers: dict[str, IssuerConfig],
        jwks: JwksCache,
        replay: ReplayCache,
        *,
        leeway_seconds: int = 30,
        public_base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = issuers
        self.jwks = jwks
        self.replay = replay
        self.leeway = leeway_seconds
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._clock = clock

    def expected_audience(self, request: Request, path: str) -> str:
        """The exact URL the client called, as it saw it.

        Behind a proxy the service cannot see that URL, so CDS_PUBLIC_BASE_URL (which may include a
        path prefix) is used. Without it the request's own scheme and Host are used; uvicorn honours
        X-Forwarded-Proto from trusted proxies only.
        """
        if self.public_base_url:
            return self.public_base_url + path
        root = request.scope.get("root_path", "") or ""
        return f"{request.url.scheme}://{request.url.netloc}{root.rstrip('/')}{path}"

    async def authenticate(self, request: Request, path: str) -> TrustedClient:
        token = self._bearer(request)
        raw_header, claims, signature = self._split(token)
        header = self._header(raw_header)
        alg, kid = header["alg"], header["kid"]
        self._required(claims)
        issuer = self._issuer(claims)
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jwks_urls:
            raise Unauthorized(f"jku {_short(jku, 200)} is not an allowed JWKS URL for issuer {issuer.issuer!r}")
        self._check_audience(claims.get("aud"), self.expected_audience(request, path))
        now = self._clock()
        self._check_times(claims, now)
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise Unauthorized("jti must be a non-empty string of at most 256 characters")

        try:
            key = await self.jwks.key(issuer, kid, alg, jku)
        except KeyRefused as exc:
            raise Unauthorized(f"key {_short(kid)} refused: {exc}") from exc
        except JwksUnavailable as exc:
            raise AuthUnavailable(f"JWKS unavailable for issuer {issuer.issuer!r}") from exc
        if key is None:
            raise Unauthorized(f"unknown kid {_short(kid)} for issuer {issuer.issuer!r}")
        # The claims checked above were decoded (strictly) from the very bytes verified here, by one parser:
        # once the signature holds they are the issuer's, with nothing left to parse differently.
        self._verify_signature(token.rpartition(".")[0], signature, key, alg)

        ttl = int(float(claims["exp"]) - now) + self.leeway + 1
        try:
            replayed = await self.replay.seen(jti, issuer.issuer, ttl)
        except ReplayCacheUnavailable as exc:
            raise AuthUnavailable(f"replay cache unavailable ({exc})") from exc
        # before the replay verdict, so a client retrying the same token in the window gets the same 503
        self._check_replay_memory(float(claims["iat"]), now)
        if replayed:
            raise Unauthorized(f"replayed jti from issuer {issuer.issuer!r}")
        return TrustedClient(issuer=issuer.issuer, jti=jti, config=issuer)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _bearer(request: Request) -> str:
        value = request.headers.get("authorization")
        if not value:
            raise Unauthorized("no Authorization header")
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization is not a Bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
        return token

    @staticmethod
    def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
        """Header, claims and signature of the still-unverified token, decoded once and strictly.

        This is the only parse of the token: the signature is later checked over the same two segments.
        (PyJWT's ``jwt.decode`` would parse it again, checking the base64 alphabet character by character
        in Python; here a regex and the C decoder do it.)
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthorized("malformed JWT (not three segments)")
        try:
            header = orjson.loads(_b64decode(parts[0]))
            claims = orjson.loads(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise Unauthorized(f"malformed JWT ({type(exc).__name__})") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise Unauthorized("malformed JWT (header or payload is not a JSON object)")
        return header, claims, signature

    @staticmethod
    def _header(header: dict[str, Any]) -> dict[str, Any]:
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:  # no "none", no HMAC, nothing weaker or unexpected
            raise Unauthorized(f"alg {_short(alg)} is not accepted (ES384 or RS384 only)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
            raise Unauthorized("kid is missing")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise Unauthorized(f"typ {_short(typ)} is not JWT")
        if "crit" in header:  # we implement no JWS extensions, so a critical one cannot be honoured
            raise Unauthorized("crit header parameters are not supported")
        if "b64" in header:  # RFC 7797 unencoded payloads: an extension, and one that needs crit
            raise Unauthorized("crit header parameters are not supported (b64)")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise Unauthorized("jku is not a string")
        return header

    @staticmethod
    def _required(claims: dict[str, Any]) -> None:
        missing = [c for c in _REQUIRED if c not in claims]
        if missing:
            raise Unauthorized(f"missing claim(s) {', '.join(missing)}")

    def _issuer(self, claims: dict[str, Any]) -> IssuerConfig:
        iss = claims["iss"]
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"issuer {_short(iss, 200)} is not trusted")
        return issuer

    @staticmethod
    def _check_audience(aud: Any, expected: str) -> None:
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not values or not all(isinstance(a, str) for a in values):
            raise Unauthorized("aud must be a string or an array of strings")
        want = normalise_url(expected)
        if want is None or not any(normalise_url(a) == want for a in values):
            raise Unauthorized(f"aud does not name this endpoint ({expected})")

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        values = [claims["exp"], claims["iat"], claims.get("nbf", 0)]
        if not all(type(v) in (int, float) for v in values):  # JSON numbers only: no strings, no booleans
            raise Unauthorized("exp, iat and nbf must be numbers")
        exp, iat = float(claims["exp"]), float(claims["iat"])
        nbf = float(claims["nbf"]) if "nbf" in claims else None
        if not all(math.isfinite(v) for v in (exp, iat, nbf or 0.0)):  # Python's json reads NaN/Infinity
            raise Unauthorized("exp, iat and nbf must be finite numbers")
        if exp + self.leeway <= now:
            raise Unauthorized("token expired")
        if iat - self.leeway > now:
            raise Unauthorized("iat is in the future")
        if nbf is not None and nbf - self.leeway > now:
            raise Unauthorized("token not yet valid (nbf)")
        if exp - iat > MAX_LIFETIME_SECONDS:
            raise Unauthorized(f"token lifetime longer than {MAX_LIFETIME_SECONDS} s")

    def _check_replay_memory(self, iat: float, now: float) -> None:
        """Refuse a token that could have been used before the replay cache lost its memory.

        Such a token was accepted, at the latest, just before the cache's memory starts
        (``remembers_since``), and an accepted ``iat`` lies at most the leeway in the future: so a token
        whose ``iat`` is earlier than ``remembers_since`` + leeway may be a replay the cache forgot. While
        an honest client could still hold such a token (the leeway after that moment), the answer is a
        503 with Retry-After (a fresh token then passes); later, a 401.
        """
        since = self.replay.remembers_since
        trusted_from = since + self.leeway
        if not since or iat >= trusted_from:
            return
        if now < trusted_from + self.leeway:
            raise AuthUnavailable("replay cache lost its memory; token issued before it can be checked again",
                                  retry_after=math.ceil(trusted_from - now))
        raise Unauthorized("replay memory lost: token issued before the replay cache lost its memory")

    @staticmethod
    def _verify_signature(signing_input: str, signature: bytes, key: jwt.PyJWK, alg: str) -> None:
        """The JWS signature over ``header.payload`` with ``key``, which is bound to exactly ``alg``."""
        if key.algorithm_name != alg:  # jwks.build_key binds it; a mismatch would be algorithm confusion
            raise Unauthorized(f"key {_short(alg)} refused: the key is bound to another algorithm")
        try:
            valid = key.Algorithm.verify(signing_input.encode("ascii"), key.key, signature)
        except (ValueError, TypeError) as exc:  # e.g. an ECDSA signature of the wrong length
            raise Unauthorized("signature does not verify") from exc
        if not valid:
            raise Unauthorized("signature does not verify")


# Metric labels must come from a small fixed set: the reasons above embed caller-controlled text
# (kid, iss, alg), which would otherwise become unbounded (and attacker-chosen) label values.
_REASON_CATEGORIES = (
    ("no Authorization header", "missing-token"),
    ("Authorization is not a Bearer", "not-bearer"),
    ("token longer", "malformed"),
    ("malformed JWT", "malformed"),
    ("alg ", "bad-alg"),
    ("kid is missing", "bad-kid"),
    ("unknown kid", "bad-kid"),
    ("key ", "bad-kid"),
    ("typ ", "bad-header"),
    ("crit ", "bad-header"),
    ("jku", "bad-jku"),
    ("missing claim", "bad-claims"),
    ("jti must", "bad-claims"),
    ("claims parse", "bad-claims"),
    ("aud must", "bad-claims"),
    ("exp, iat", "bad-claims"),
    ("issuer ", "untrusted-issuer"),
    ("aud does not", "wrong-audience"),
    ("token expired", "expired"),
    ("iat is in the future", "not-yet-valid"),
    ("token not yet valid", "not-yet-valid"),
    ("token lifetime", "lifetime-too-long"),
    ("replayed jti", "replayed-jti"),
    ("replay memory lost", "replay-memory-lost"),
    ("signature does not verify", "bad-signature"),
)


def reason_category(reason: str) -> str:
    for prefix, category in _REASON_CATEGORIES:
        if reason.startswith(prefix):
            return category
    return "other"
