"""``CDS_TRUSTED_ISSUERS``: which JWT issuers we trust, where their keys are, which FHIR servers they may name.

Accepted forms (a JSON object)::

    {"https://sandbox.cds-hooks.org": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}

    {"https://ehr.example.org/api/FHIR/R4": {
        "jwks_url": "https://ehr.example.org/api/epic/2019/Security/Open/PublicKeys/530013/530013",
        "jwks_urls": ["https://.../rotation-2"],          # more allowed JWKS / jku URLs
        "jwks_file": "/etc/cds/ehr-jwks.json",            # or "jwks": {...}: pinned keys, never fetched
        "fhir_servers": ["https://ehr.example.org/api/FHIR/R4"]}}

``fhir_servers`` defaults to the issuer itself (Epic's ``iss`` is the organisation's FHIR base URL);
``[]`` forbids fetching from any FHIR server for that issuer. Every problem is a :class:`IssuerConfigError`
naming the issuer and the key, raised at start-up rather than at the first request.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_KEYS = {"jwks_url", "jwks_urls", "jwks", "jwks_file", "fhir_servers"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class IssuerConfigError(ValueError):
    """CDS_TRUSTED_ISSUERS is malformed; the message says where."""


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_url(url: Any, where: str) -> str:
    """A JWKS must come over TLS; plain http only to this machine (tests, a local sandbox build)."""
    if not isinstance(url, str) or not url.strip():
        raise IssuerConfigError(f"{where}: a JWKS URL must be a non-empty string.")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise IssuerConfigError(f"{where}: {url!r} is not an absolute URL.")
    if parts.username or parts.password:
        raise IssuerConfigError(f"{where}: {url!r} must not contain credentials.")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and is_loopback_host(host):
        return url
    raise IssuerConfigError(f"{where}: JWKS URL {url!r} must use https (http is allowed only to a loopback address).")


@dataclass(frozen=True)
class FhirBase:
    """A normalised FHIR base URL: scheme, host, port and path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, url: str) -> FhirBase | None:
        """None when ``url`` is not a plain http(s) URL we are willing to compare (credentials, query,
        dot segments or encoded slashes make the comparison ambiguous, so they are refused)."""
        if not isinstance(url, str) or len(url) > 2048 or "\\" in url:
            return None
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
            return None
        if parts.query or parts.fragment:
            return None
        segments = []
        for raw in parts.path.split("/"):
            if not raw:
                continue  # "//" and a trailing "/" do not change which server is meant
            seg = unquote(raw)
            if seg in (".", "..") or "/" in seg or "\\" in seg:
                return None
            segments.append(seg)
        return cls(scheme, host, port or _DEFAULT_PORTS[scheme], tuple(segments))

    def contains(self, other: FhirBase) -> bool:
        return (
            (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
            and other.segments[: len(self.segments)] == self.segments
        )


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    jwks_urls: tuple[str, ...]  # allowed ``jku`` values, and where keys are fetched from
    pinned_jwks: dict[str, Any] | None  # keys given in the configuration: never fetched
    fhir_servers: tuple[FhirBase, ...]

    def fhir_allowed(self, url: str) -> bool:
        target = FhirBase.parse(url)
        return target is not None and any(base.contains(target) for base in self.fhir_servers)


def _pinned(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise IssuerConfigError(f"{where}: a JWKS must be an object with a non-empty 'keys' array.")
    for i, key in enumerate(value["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            raise IssuerConfigError(f"{where}: keys[{i}] must be a JWK object with a 'kid'.")
    return value


def _one(issuer: Any, value: Any) -> IssuerConfig:
    if not isinstance(issuer, str) or not issuer.strip():
        raise IssuerConfigError("CDS_TRUSTED_ISSUERS: every issuer must be a non-empty string.")
    where = f"CDS_TRUSTED_ISSUERS[{issuer!r}]"
    if isinstance(value, str):
        value = {"jwks_url": value}
    if not isinstance(value, dict):
        raise IssuerConfigError(f"{where}: must be a JWKS URL string or an object.")
    unknown = set(value) - _KEYS
    if unknown:  # a typo such as "fhir_server" must not silently change what is allowed
        raise IssuerConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}.")

    urls: list[str] = []
    if "jwks_url" in value:
        urls.append(check_jwks_url(value["jwks_url"], f"{where}.jwks_url"))
    extra = value.get("jwks_urls", [])
    if not isinstance(extra, list):
        raise IssuerConfigError(f"{where}.jwks_urls: must be a list of URLs.")
    urls += [check_jwks_url(u, f"{where}.jwks_urls") for u in extra]

    pinned = None
    if "jwks" in value and "jwks_file" in value:
        raise IssuerConfigError(f"{where}: give 'jwks' or 'jwks_file', not both.")
    if "jwks" in value:
        pinned = _pinned(value["jwks"], f"{where}.jwks")
    elif "jwks_file" in value:
        path = value["jwks_file"]
        try:
            pinned = _pinned(json.loads(Path(path).read_text(encoding="utf-8")), f"{where}.jwks_file")
        except (OSError, TypeError, ValueError) as exc:
            if isinstance(exc, IssuerConfigError):
                raise
            raise IssuerConfigError(f"{where}.jwks_file: cannot read a JWKS from {path!r} ({exc}).") from exc
    if not urls and pinned is None:
        raise IssuerConfigError(f"{where}: needs 'jwks_url', 'jwks_urls', 'jwks' or 'jwks_file'.")

    if "fhir_servers" in value:
        servers = value["fhir_servers"]
        if not isinstance(servers, list):
            raise IssuerConfigError(f"{where}.fhir_servers: must be a list of FHIR base URLs.")
    else:
        # Epic: iss is the organisation's FHIR base. Anything else that is not a URL allows nothing.
        servers = [issuer] if FhirBase.parse(issuer) else []
    bases = []
    for s in servers:
        base = FhirBase.parse(s)
        if base is None:
            raise IssuerConfigError(f"{where}.fhir_servers: {s!r} is not a plain http(s) FHIR base URL.")
        bases.append(base)
    return IssuerConfig(issuer=issuer, jwks_urls=tuple(dict.fromkeys(urls)), pinned_jwks=pinned,
                        fhir_servers=tuple(bases))


def parse_trusted_issuers(raw: Any) -> dict[str, IssuerConfig]:
    """Validate the whole setting; a JSON string is parsed first."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise IssuerConfigError(f"CDS_TRUSTED_ISSUERS is not valid JSON ({exc}).") from exc
    if not isinstance(raw, Mapping):
        raise IssuerConfigError("CDS_TRUSTED_ISSUERS must be a JSON object mapping issuer -> JWKS URL or settings.")
    return {issuer: _one(issuer, value) for issuer, value in raw.items()}
