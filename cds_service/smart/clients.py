"""``CDS_SMART_CLIENTS``: for which EHRs this service is a registered SMART app, and how.

A JSON object, one entry per EHR, keyed by the issuer that EHR signs its CDS Hooks calls with::

    {"https://ehr.example.org/api/FHIR/R4": {
        "client_id": "0a1b2c3d",                           # required: the id the EHR registered us under
        "frame_ancestors": ["https://ehr.example.org"],    # origins allowed to show the timeline in a frame
        "card_links": true,                                # cards for this EHR carry the timeline link
        "scope": "launch patient/Patient.rs ...",          # default: DEFAULT_SCOPE
        "fhir_servers": ["https://ehr.example.org/api/FHIR/R4"],
        "private_key_file": "/run/secrets/smart.pem",      # a confidential client (private_key_jwt), with
        "kid": "timeline-2026"}}                           # the key id the EHR knows; else a public client

Which ``iss`` a launch may name (the allow-list) comes from the trusted issuers: with authentication on
(``CDS_TRUSTED_ISSUERS``), every key here must be a trusted issuer, and the ``iss`` must lie within that
issuer's ``fhir_servers``; ``fhir_servers`` here may only narrow them. With authentication off
(development), each entry's ``fhir_servers`` (default: the key itself) is the allow-list. Every problem is
a :class:`SmartConfigError` naming the issuer and the key, raised at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cds_service.auth.issuers import FhirBase, IssuerConfigError, parse_trusted_issuers

# SMART v2 scopes for what the timeline reads; ``launch`` asks for the EHR's launch context (the patient).
DEFAULT_SCOPE = ("launch patient/Patient.rs patient/Condition.rs patient/Observation.rs "
                 "patient/MedicationRequest.rs patient/MedicationStatement.rs patient/MedicationAdministration.rs "
                 "patient/Medication.rs")
_KEYS = {"client_id", "frame_ancestors", "card_links", "scope", "fhir_servers", "private_key_file", "kid", "alg"}
_ALGS = ("RS384", "ES384", "RS256", "ES256")
# A CSP source for frame-ancestors: scheme://host[:port], the host may start with "*." (a subdomain wildcard).
_ANCESTOR_RE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$")  # RFC 6749 scope-token


class SmartConfigError(ValueError):
    """CDS_SMART_CLIENTS is malformed or does not fit CDS_TRUSTED_ISSUERS; the message says where."""


@dataclass(frozen=True)
class SmartClient:
    """This service as a SMART app registered with one EHR."""

    issuer: str
    client_id: str
    fhir_servers: tuple[FhirBase, ...]
    frame_ancestors: tuple[str, ...] = ()
    card_links: bool = True
    scope: str = DEFAULT_SCOPE
    private_key_pem: bytes | None = None  # a confidential client signs its token requests (private_key_jwt)
    kid: str | None = None
    alg: str = "RS384"

    @property
    def confidential(self) -> bool:
        return self.private_key_pem is not None

    def match_length(self, iss: str) -> int:
        """How many path segments of ``iss`` an allowed FHIR base covers (0: not allowed)."""
        target = FhirBase.parse(iss)
        if target is None:
            return 0
        return max((len(b.segments) + 1 for b in self.fhir_servers if b.contains(target)), default=0)


def _where(issuer: str, key: str | None = None) -> str:
    return f"CDS_SMART_CLIENTS[{issuer!r}]" + (f".{key}" if key else "")


def _origin_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SmartConfigError(f"{where}: a list of origins such as https://ehr.example.org.")
    for origin in value:
        if not _ANCESTOR_RE.match(origin):
            raise SmartConfigError(f"{where}: {origin!r} is not an origin (scheme://host[:port], no path; the "
                                   f"host may start with '*.').")
    return tuple(dict.fromkeys(value))


def _bases(value: Any, where: str) -> tuple[FhirBase, ...]:
    if not isinstance(value, list) or not value:
        raise SmartConfigError(f"{where}: a non-empty list of FHIR base URLs.")
    out = []
    for url in value:
        base = FhirBase.parse(url) if isinstance(url, str) else None
        if base is None:
            raise SmartConfigError(f"{where}: {url!r} is not a plain http(s) FHIR base URL.")
        out.append(base)
    return tuple(out)


def _private_key(value: Any, where: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pem = Path(value).read_bytes()
        load_pem_private_key(pem, password=None)
    except (OSError, TypeError, ValueError) as exc:
        raise SmartConfigError(f"{where}: expected a readable PEM private key without password "
                               f"({type(exc).__name__}).") from None
    return pem


def _one(issuer: Any, value: Any, trusted: Mapping[str, Any]) -> SmartClient:
    if not isinstance(issuer, str) or not issuer.strip():
        raise SmartConfigError("CDS_SMART_CLIENTS: every issuer must be a non-empty string.")
    if not isinstance(value, dict):
        raise SmartConfigError(f"{_where(issuer)}: an object with at least a client_id.")
    unknown = set(value) - _KEYS
    if unknown:
        raise SmartConfigError(f"{_where(issuer)}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}.")
    client_id = value.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip() or len(client_id) > 256:
        raise SmartConfigError(f"{_where(issuer, 'client_id')}: the client id the EHR registered this app under.")
    if trusted:
        if issuer not in trusted:
            raise SmartConfigError(f"{_where(issuer)}: not a trusted issuer (CDS_TRUSTED_ISSUERS); with "
                                   f"authentication on, the timeline launches only from trusted EHRs.")
        allowed = trusted[issuer].fhir_servers
        servers = _bases(value["fhir_servers"], _where(issuer, "fhir_servers")) if "fhir_servers" in value \
            else allowed
        for base in servers:
            if not any(a.contains(base) for a in allowed):
                raise SmartConfigError(f"{_where(issuer, 'fhir_servers')}: every FHIR server must lie within the "
                                       f"trusted issuer's fhir_servers (CDS_TRUSTED_ISSUERS).")
    else:
        default = [issuer] if FhirBase.parse(issuer) else None
        if "fhir_servers" not in value and default is None:
            raise SmartConfigError(f"{_where(issuer, 'fhir_servers')}: needed when the issuer is not itself a "
                                   f"FHIR base URL.")
        servers = _bases(value.get("fhir_servers", default), _where(issuer, "fhir_servers"))
    if not servers:
        raise SmartConfigError(f"{_where(issuer)}: the trusted issuer allows no FHIR server, so nothing could "
                               f"launch the timeline.")
    scope = value.get("scope", DEFAULT_SCOPE)
    if not isinstance(scope, str) or not _SCOPE_RE.match(scope) or "launch" not in scope.split():
        raise SmartConfigError(f"{_where(issuer, 'scope')}: space-separated scopes including 'launch'.")
    card_links = value.get("card_links", True)
    if not isinstance(card_links, bool):
        raise SmartConfigError(f"{_where(issuer, 'card_links')}: true or false.")
    pem, kid, alg = None, value.get("kid"), value.get("alg", "RS384")
    if "private_key_file" in value:
        pem = _private_key(value["private_key_file"], _where(issuer, "private_key_file"))
        if not isinstance(kid, str) or not kid:
            raise SmartConfigError(f"{_where(issuer, 'kid')}: the key id the EHR knows the public key by.")
        if alg not in _ALGS:
            raise SmartConfigError(f"{_where(issuer, 'alg')}: one of {', '.join(_ALGS)}.")
    ancestors = _origin_list(value.get("frame_ancestors", []), _where(issuer, "frame_ancestors"))
    return SmartClient(issuer=issuer, client_id=client_id.strip(), fhir_servers=servers, frame_ancestors=ancestors,
                       card_links=card_links, scope=scope, private_key_pem=pem, kid=kid, alg=alg)


def parse_smart_clients(raw: Any, trusted_issuers: Any = None) -> dict[str, SmartClient]:
    """Validate the whole setting against the (already valid) trusted issuers."""
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        raise SmartConfigError("CDS_SMART_CLIENTS must be a JSON object mapping each issuer to its SMART client.")
    try:
        trusted = parse_trusted_issuers(trusted_issuers) if trusted_issuers else {}
    except IssuerConfigError:
        trusted = {}  # that setting reports its own mistake
    return {issuer: _one(issuer, value, trusted) for issuer, value in raw.items()}


class SmartClients:
    """The configured clients, looked up by the ``iss`` of a launch or by the issuer of a hook call."""

    def __init__(self, clients: Mapping[str, SmartClient]) -> None:
        self.clients = dict(clients)

    def for_iss(self, iss: str) -> SmartClient | None:
        """The client whose allowed FHIR servers hold ``iss`` (the most specific one), or None."""
        best, length = None, 0
        for client in self.clients.values():
            n = client.match_length(iss)
            if n > length:
                best, length = client, n
        return best

    def for_issuer(self, issuer: str | None) -> SmartClient | None:
        return self.clients.get(issuer) if issuer else None

    def all_frame_ancestors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for c in self.clients.values() for a in c.frame_ancestors))


def is_secure_endpoint(url: Any) -> bool:
    """An endpoint the EHR's configuration may point us at: https, or http to this machine (tests, development)."""
    from cds_service.auth.issuers import is_loopback_host

    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = parts.hostname or ""
    if not host or parts.username or parts.password or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))
