"""The replay-cache interface: remember each JWT ``jti`` for as long as its token could be replayed.

CDS Hooks best practice: a service stores the ``jti`` of every accepted token for the token's lifetime
and refuses a second token with the same ``jti``. The check must be an atomic add-if-absent, or two
concurrent requests carrying the same token could both pass.

A cache can also lose what it remembered (Redis restarted without persistence, flushed, replaced by an
empty server). It then says since when its memory is complete (:attr:`ReplayCache.remembers_since`), and
the authenticator refuses tokens that could have been used before that moment, since their ``jti`` may
have been forgotten.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class ReplayCacheUnavailable(Exception):
    """The cache could not answer (e.g. Redis is down). Callers fail closed (503), never open."""


class ReplayCache(ABC):
    #: Unix time from which every recorded ``jti`` is still known; a ``jti`` recorded earlier may have been
    #: forgotten. Kept current by :meth:`seen` (read it after the call). 0: no loss is known.
    remembers_since: float = 0.0

    @abstractmethod
    async def seen(self, jti: str, issuer: str, ttl_seconds: int) -> bool:
        """Atomically record ``(issuer, jti)`` for ``ttl_seconds``; True if it was already recorded.

        The issuer is part of the key: two issuers may pick the same ``jti`` independently.
        """

    async def ping(self) -> None:  # noqa: B027 - a cache in this process is always there
        """Raise :class:`ReplayCacheUnavailable` when the cache cannot answer (``/ready`` asks)."""

    async def close(self) -> None:  # noqa: B027 - optional hook; most caches hold nothing to release
        """Release connections (called at application shutdown)."""
