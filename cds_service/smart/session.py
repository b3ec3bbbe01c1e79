"""One launch's secrets, bound to the browser that started it.

``/smart/launch`` makes three random values: ``state`` (sent to the EHR and back), a PKCE ``code_verifier``
(only its S256 challenge leaves the service) and a browser secret (sent only in a cookie). The pending
launch (the verifier, the EHR's token endpoint, ...) is sealed with AES-GCM under a key derived from the
browser secret and stored under a digest of ``state`` (:mod:`cds_service.smart.pending`). The callback
needs both the ``state`` from the URL and the cookie from the same browser to open it: a forged or
missing state finds nothing, another browser's cookie cannot decrypt it, and either way the launch is
spent.

The cookie is ``__Host-`` (Secure, Path=/, no Domain: only this host can set or read it), HttpOnly,
``SameSite=None`` (it must come back on the EHR's cross-site redirect) and ``Partitioned`` (CHIPS): inside
an EHR's cross-site iframe, Chromium keeps only partitioned cookies. Each launch has its own cookie name,
so two launches in one browser do not overwrite each other.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

COOKIE_PREFIX = "__Host-ns-timeline-"
_SEAL_LABEL = b"cds-service smart launch v1\0"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 section 4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class LaunchSecrets:
    state: str
    verifier: str
    browser_secret: str

    @classmethod
    def new(cls) -> LaunchSecrets:
        # 256 bits each; the verifier is 86 characters of [A-Za-z0-9_-] (RFC 7636 asks for 43 to 128).
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(64), secrets.token_urlsafe(32))

    @property
    def challenge(self) -> str:
        return s256(self.verifier)


def store_key(state: str) -> str:
    """Where a launch is kept: a digest, so the store never holds ``state`` itself."""
    return hashlib.sha256(b"state\0" + state.encode("utf-8", "replace")).hexdigest()


def cookie_name(state: str) -> str:
    return COOKIE_PREFIX + store_key(state)[:20]


def _aead(browser_secret: str):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(hashlib.sha256(_SEAL_LABEL + browser_secret.encode("utf-8", "replace")).digest())


def seal(browser_secret: str, key: str, payload: dict[str, Any]) -> bytes:
    nonce = os.urandom(12)
    return nonce + _aead(browser_secret).encrypt(nonce, orjson.dumps(payload), key.encode("ascii"))


def unseal(browser_secret: str, key: str, blob: bytes) -> dict[str, Any] | None:
    """The payload, or None when the cookie is not the one the launch was sealed for."""
    from cryptography.exceptions import InvalidTag

    if len(blob) < 13:
        return None
    try:
        data = _aead(browser_secret).decrypt(blob[:12], blob[12:], key.encode("ascii"))
    except (InvalidTag, ValueError):
        return None
    payload = orjson.loads(data)
    return payload if isinstance(payload, dict) else None


def set_cookie_header(name: str, value: str, max_age: int) -> str:
    return f"{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=None; Partitioned"


def clear_cookie_header(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=None; Partitioned"
