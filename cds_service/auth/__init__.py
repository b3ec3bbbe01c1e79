"""Authentication of CDS clients (EHRs) by their signed JWT; on when CDS_TRUSTED_ISSUERS is set.

``install`` builds the :class:`Authenticator` that ``app.py`` calls for discovery, service and feedback
requests. See docs/security.md for the trust model and configuration.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cds_service import logs

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from cds_service.auth.issuers import FhirBase, IssuerConfig, IssuerConfigError, parse_trusted_issuers
    from cds_service.auth.verify import Authenticator, AuthUnavailable, TrustedClient
    from cds_service.config import Settings

# The JWT and crypto libraries load with the first of these names used (install() with trusted issuers, or
# an import by name), not with this package: a service without authentication never loads them.
_LAZY = {"FhirBase": "issuers", "IssuerConfig": "issuers", "IssuerConfigError": "issuers",
         "parse_trusted_issuers": "issuers", "JwksCache": "jwks", "Authenticator": "verify",
         "AuthUnavailable": "verify", "TrustedClient": "verify"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "AuthUnavailable",
    "Authenticator",
    "FhirBase",
    "IssuerConfig",
    "IssuerConfigError",
    "TrustedClient",
    "authenticate",
    "install",
    "parse_trusted_issuers",
]

log = logs.get_logger("cds_service.auth")


async def authenticate(request: Request, path: str) -> TrustedClient | None:
    """The calling client, or a 401 (503 when the keys cannot be fetched). None only when authentication is
    off; with trusted issuers configured and no authenticator installed, every request is refused."""
    auth = request.app.state.authenticator  # read per request: install() sets it after the routes exist
    if auth is not None:
        return await auth.authenticate(request, path)
    if request.app.state.settings.auth_enabled:
        from cds_service.errors import Unauthorized

        raise Unauthorized("authentication is configured but no authenticator is installed")
    return None


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.trusted_issuers:
        return  # no-issuer mode: cds-service serve refuses a non-loopback bind unless --insecure
    from cds_service.auth.issuers import parse_trusted_issuers
    from cds_service.auth.jwks import JwksCache
    from cds_service.auth.verify import Authenticator
    from cds_service.replay import make_replay_cache

    issuers = parse_trusted_issuers(settings.trusted_issuers)
    redis = None
    if settings.redis_url:
        from cds_service.replay.redis import connect

        redis = connect(settings.redis_url)
    jwks = JwksCache(lambda: app.state.http, redis=redis)
    replay = make_replay_cache(settings, redis)
    app.state.authenticator = Authenticator(
        issuers,
        jwks,
        replay,
        leeway_seconds=settings.jwt_leeway_seconds,
        public_base_url=settings.public_base_url,
    )

    async def _close(_app: FastAPI) -> None:
        await replay.close()
        if redis is not None:
            await redis.aclose()

    app.state.shutdown_hooks.append(_close)
    if not settings.public_base_url:
        log.warning("public_base_url_unset",
                    detail="JWT aud is checked against the request's own Host header; set CDS_PUBLIC_BASE_URL "
                           "to the URL the EHR calls")
    log.info("auth_enabled", issuers=sorted(issuers), replay_cache="redis" if redis else "memory",
             jwks_cache="redis" if redis else "memory")
