"""The SMART App Launch 2.x steps this service takes as the app: discovery, authorize, token.

* :func:`discover` reads ``{iss}/.well-known/smart-configuration`` and keeps what the launch needs; an
  EHR that does not offer PKCE with S256 is refused (``plain`` is never used).
* :func:`authorize_url` builds the authorization request: ``response_type=code``, ``client_id``,
  ``redirect_uri``, ``launch``, ``scope``, ``state``, ``aud`` (the ``iss``), ``code_challenge`` and
  ``code_challenge_method=S256``.
* :func:`exchange_code` trades the code for a token (server to server: no CORS, the token never reaches the
  browser), with the PKCE verifier and, for a confidential client, a signed ``private_key_jwt`` assertion.

Every call goes out through the service's pooled HTTP client without following redirects, with a size cap
and a deadline. Errors are :class:`LaunchRefused` with a message safe to show (no token, code or state).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson

from cds_service.body import join_limited
from cds_service.smart.clients import SmartClient, is_secure_endpoint

MAX_ANSWER_BYTES = 256 * 1024
ASSERTION_LIFETIME_SECONDS = 300
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class LaunchRefused(Exception):
    """A launch that cannot go on. ``message`` is for the person in front of the EHR; ``reason`` is a short
    code for logs and metrics; neither carries a secret or a patient identifier."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    patient: str
    scope: str
    app_context: str | None = None
    need_patient_banner: bool = False


async def _get_json(http: httpx.AsyncClient, method: str, url: str, deadline: float, what: str,
                    **kwargs: Any) -> tuple[int, Any]:
    loop = asyncio.get_running_loop()
    left = deadline - loop.time()
    if left <= 0:
        raise LaunchRefused(f"The EHR did not answer the {what} in time.", f"{what}_timeout", 504)
    try:
        async with asyncio.timeout(left):
            async with http.stream(method, url, follow_redirects=False, timeout=httpx.Timeout(left),
                                   headers={"Accept": "application/json"}, **kwargs) as resp:
                raw = await join_limited(resp.aiter_bytes(), MAX_ANSWER_BYTES)
                status = resp.status_code
    except (TimeoutError, httpx.TimeoutException):
        raise LaunchRefused(f"The EHR did not answer the {what} in time.", f"{what}_timeout", 504) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise LaunchRefused(f"The EHR could not be reached for the {what} ({type(exc).__name__}).",
                            f"{what}_unreachable", 502) from None
    if raw is None:
        raise LaunchRefused(f"The EHR's {what} answer was too large.", f"{what}_too_large", 502)
    try:
        return status, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return status, None


def configuration_url(iss: str) -> str:
    return iss.rstrip("/") + "/.well-known/smart-configuration"


async def discover(http: httpx.AsyncClient, iss: str, deadline: float) -> SmartConfiguration:
    status, data = await _get_json(http, "GET", configuration_url(iss), deadline, "SMART configuration")
    if status != 200 or not isinstance(data, dict):
        raise LaunchRefused(f"The EHR has no usable SMART configuration (.well-known/smart-configuration answered "
                            f"HTTP {status}).", "discovery_failed", 502)
    auth, token = data.get("authorization_endpoint"), data.get("token_endpoint")
    if not is_secure_endpoint(auth) or not is_secure_endpoint(token):
        raise LaunchRefused("The EHR's SMART configuration lacks https authorization and token endpoints.",
                            "discovery_endpoints", 502)
    methods = data.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        # SMART App Launch 2: PKCE with S256 is required; "plain" protects nothing if the code leaks.
        raise LaunchRefused("The EHR does not offer PKCE with S256 (code_challenge_methods_supported), which "
                            "this app requires; it never uses 'plain'.", "pkce_s256_unsupported", 502)
    caps = data.get("capabilities")
    capabilities = tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else ()
    return SmartConfiguration(auth, token, capabilities)


def authorize_url(config: SmartConfiguration, client: SmartClient, *, iss: str, launch: str, state: str,
                  challenge: str, redirect_uri: str) -> str:
    query = urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri, "launch": launch,
        "scope": client.scope, "state": state, "aud": iss, "code_challenge": challenge,
        "code_challenge_method": "S256",
    })
    base = config.authorization_endpoint
    return f"{base}{'&' if urlsplit(base).query else '?'}{query}"


def client_assertion(client: SmartClient, token_endpoint: str, now: float | None = None) -> str:
    """The ``private_key_jwt`` assertion (SMART asymmetric client authentication), valid for five minutes."""
    import jwt

    issued = int(now if now is not None else time.time())
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": token_endpoint, "jti": str(uuid.uuid4()),
              "iat": issued, "exp": issued + ASSERTION_LIFETIME_SECONDS}
    return jwt.encode(claims, client.private_key_pem, algorithm=client.alg, headers={"kid": client.kid,
                                                                                      "typ": "JWT"})


async def exchange_code(http: httpx.AsyncClient, token_endpoint: str, client: SmartClient, *, code: str,
                        verifier: str, redirect_uri: str, deadline: float) -> TokenResponse:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    if client.confidential:
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = client_assertion(client, token_endpoint)
    else:
        form["client_id"] = client.client_id
    status, data = await _get_json(http, "POST", token_endpoint, deadline, "token request", data=form)
    if status != 200 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else None
        code_text = f" ({error})" if isinstance(error, str) and error.isascii() and len(error) < 64 else ""
        raise LaunchRefused(f"The EHR refused the token request{code_text}. The launch may have been used "
                            "already or have expired: open the timeline again from the card.", "token_refused",
                            400 if status in (400, 401) else 502)
    return _token_response(data)


def _token_response(data: dict[str, Any]) -> TokenResponse:
    token, kind, patient = data.get("access_token"), data.get("token_type"), data.get("patient")
    if not isinstance(token, str) or not token or not isinstance(kind, str) or kind.lower() != "bearer":
        raise LaunchRefused("The EHR's token answer has no bearer access token.", "token_malformed", 502)
    if not isinstance(patient, str) or not patient or len(patient) > 64:
        raise LaunchRefused("The EHR gave no patient in its launch context, so there is no chart to draw.",
                            "no_patient_context", 502)
    scope = data.get("scope") if isinstance(data.get("scope"), str) else ""
    ctx = data.get("appContext")
    if ctx is not None and not isinstance(ctx, str):
        ctx = orjson.dumps(ctx).decode() if isinstance(ctx, dict | list) else None
    return TokenResponse(token, patient, scope, ctx, data.get("need_patient_banner") is True)


def public_jwks(clients) -> dict[str, Any]:
    """The public keys of the confidential clients, for EHRs that fetch them (``/smart/jwks.json``)."""
    import json

    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    keys = []
    for client in clients:
        if not client.confidential:
            continue
        public = load_pem_private_key(client.private_key_pem, password=None).public_key()
        algorithm = ECAlgorithm if client.alg.startswith("ES") else RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(public))
        jwk.update({"kid": client.kid, "alg": client.alg, "use": "sig", "key_ops": ["verify"]})
        keys.append(jwk)
    return {"keys": keys}
