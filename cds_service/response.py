"""The CDS Hooks response for a gathered record: the engine's cards, or one honest card when it fails.

Used by the HTTP service, ``cds-service evaluate`` and the preview page alike, so none of them goes through
the web application to reach the engine.
"""

from __future__ import annotations

from collections.abc import Collection

import orjson

from cds_service import logs
from cds_service.clinical import engine
from cds_service.clinical.cards import card_library
from cds_service.clinical.record import PatientRecord
from cds_service.models import RULE_ID_EXTENSION, Card, CDSResponse, Source, dump
from cds_service.services import Service

log = logs.get_logger("cds_service.response")

EVALUATION_FAILED_RULE = "service.evaluation-failed"


def evaluation_failed_card() -> Card:
    """What the clinician sees when the rules stop with an internal error: no recommendation, said plainly."""
    return Card(
        summary="Neurosarcoidosis decision support could not evaluate this order.",
        detail="An internal error stopped the rules for this order, so **no recommendation was made**. "
        "Use clinical judgement; the error has been logged for the service team.",
        indicator="warning",
        source=Source(label="Neurosarcoidosis CDS service"),
        overrideReasons=_acknowledged(),
        extension={RULE_ID_EXTENSION: EVALUATION_FAILED_RULE},
    )


def _acknowledged() -> list[dict[str, str]] | None:
    """The one override reason of the failure card, in the cards' override-reason code system."""
    try:
        system = card_library()["_override_reasons"]["system"]
    except Exception:  # noqa: BLE001 - the card texts may be what failed: the card goes without a reason
        return None
    return [{"code": "acknowledged", "system": system, "display": "Acknowledged"}]


def evaluate_cards(record: PatientRecord, hook: str, hook_instance: str,
                   rule_groups: Collection[str] | None = None) -> list[Card]:
    """Run the rules (of ``rule_groups``; None: every group the hook reads); a bug in a rule becomes an honest
    card, never a 500 or a silent empty answer."""
    try:
        return engine.evaluate(record, hook, rule_groups=rule_groups).cards
    except Exception as exc:  # noqa: BLE001 - the clinician must still get an answer
        log.error("rules_failed", hookInstance=hook_instance, error=type(exc).__name__, exc_info=True)
        return [evaluation_failed_card()]


def answer(record: PatientRecord, service: Service, hook_instance: str, links=None) -> tuple[list[Card], bytes]:
    """The cards of ``service``'s rule groups (with the links ``links(cards)`` adds, when given) and the encoded
    CDS Hooks response."""
    cards = evaluate_cards(record, service.engine_hook, hook_instance, service.rule_groups)
    if links is not None:
        links(cards)
    return cards, orjson.dumps(dump(CDSResponse(cards=cards)))
