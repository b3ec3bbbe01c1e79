"""The card link that opens the treatment timeline: a CDS Hooks ``smart`` link with the card's rule as ``appContext``.

Ladder, IVIG-indication and IVIG-safety cards carry it when the calling EHR may launch the timeline: with
authentication on, when the caller's issuer has a SMART client here (``CDS_SMART_CLIENTS``) with
``card_links`` on; without authentication (development, the card preview, ``cds-service evaluate``), when
``CDS_SMART_LINKS_UNAUTHENTICATED`` is true and a SMART client is configured. The EHR adds ``iss`` and
``launch`` to the URL when the clinician clicks it.
"""

from __future__ import annotations

from typing import Any

from cds_service.models import RULE_ID_EXTENSION

LABEL = "Open treatment timeline"
LINKED_RULES = ("stage.", "ladder.", "ivig.")  # the ladder, IVIG-indication and IVIG-safety cards
LAUNCH_PATH = "/smart/launch"


def links_enabled(settings: Any, issuer: str | None) -> bool:
    """Whether cards for this caller (its issuer; None when unauthenticated) carry the timeline link."""
    if not settings.smart_clients:
        return False
    if settings.auth_enabled:
        entry = settings.smart_clients.get(issuer) if issuer else None
        return isinstance(entry, dict) and entry.get("card_links", True) is True
    return settings.smart_links_unauthenticated


def launch_url(settings: Any, request_base: str | None = None) -> str:
    """The app's launch URL: the public base URL when set, else the one the caller used, else host and port."""
    base = settings.public_base_url or request_base or f"http://{settings.host}:{settings.port}"
    return base.rstrip("/") + LAUNCH_PATH


def add_timeline_links(cards: list, url: str) -> list:
    """Append the smart link to every linked card (cards are ``models.WireCard``); returns ``cards``."""
    for card in cards:
        rule = str((card.extension or {}).get(RULE_ID_EXTENSION) or "")
        if not rule.startswith(LINKED_RULES):
            continue
        link = {"label": LABEL, "url": url, "type": "smart", "appContext": rule}  # models.Link's key order
        card.links = [*(card.links or ()), link]  # a new list: the card's own may be its template's
    return cards


def for_call(cards: list, settings: Any, issuer: str | None, request_base: str | None) -> list:
    if links_enabled(settings, issuer):
        add_timeline_links(cards, launch_url(settings, request_base))
    return cards
