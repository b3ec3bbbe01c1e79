"""The CDS Hooks response for a gathered record: the engine's cards, or one honest card when it fails.

Used by the HTTP service, ``cds-service evaluate`` and the preview page alike, so none of them goes through
the web application to reach the engine.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from cds_service import logs
from cds_service.clinical import engine
from cds_service.clinical.cards import card_library
from cds_service.clinical.record import PatientRecord
from cds_service.governance.modes import ALL_ON, RuleModes
from cds_service.models import RULE_ID_EXTENSION, Card, Source, WireCard, encode_response
from cds_service.services import Service

log = logs.get_logger("cds_service.response")

EVALUATION_FAILED_RULE = "service.evaluation-failed"


def evaluation_failed_card() -> WireCard:
    """What the clinician sees when the rules stop with an internal error: no recommendation, said plainly."""
    return WireCard.of(Card(
        summary="Neurosarcoidosis decision support could not evaluate this order.",
        detail="An internal error stopped the rules for this order, so **no recommendation was made**. "
        "Use clinical judgement; the error has been logged for the service team.",
        indicator="warning",
        source=Source(label="Neurosarcoidosis CDS service"),
        overrideReasons=_acknowledged(),
        extension={RULE_ID_EXTENSION: EVALUATION_FAILED_RULE},
    ))


def _acknowledged() -> list[dict[str, str]] | None:
    """The failure card's override reasons (``failure`` in cards/_common.yaml), in the cards' code system."""
    try:
        reasons = card_library()["_override_reasons"]
        return [{"code": r["code"], "system": reasons["system"], "display": r["display"]}
                for r in reasons["sets"]["failure"]]
    except Exception:  # noqa: BLE001 - the card texts may be what failed: the card goes without a reason
        return None


def evaluate_cards(record: PatientRecord, hook: str, hook_instance: str, rule_groups: Collection[str] | None = None,
                   rules_off: Collection[str] = frozenset()) -> list[WireCard]:
    """Run the rules (of ``rule_groups``; None: every group the hook reads; never those in ``rules_off``); a bug
    in a rule becomes an honest card, never a 500 or a silent empty answer."""
    evaluation = _evaluate(record, hook, hook_instance, rule_groups, rules_off)
    return evaluation.wire_cards if evaluation is not None else [evaluation_failed_card()]


def _evaluate(record: PatientRecord, hook: str, hook_instance: str, rule_groups: Collection[str] | None,
              rules_off: Collection[str]):
    """The engine's evaluation, or None when a rule failed (logged)."""
    try:
        return engine.evaluate(record, hook, rule_groups=rule_groups, rules_off=rules_off)
    except Exception as exc:  # noqa: BLE001 - the clinician must still get an answer
        log.error("rules_failed", hookInstance=hook_instance, error=type(exc).__name__, exc_info=True)
        return None


@dataclass
class Answer:
    """What one hook call answered, and what only the audit sees."""

    cards: list[WireCard]  # returned to the EHR
    shadow: list[WireCard]  # cards of rules in shadow mode: audited, never returned
    body: bytes  # the encoded CDS Hooks response
    ladder_orders: int = 0  # "the orders" of the call that are ladder drugs
    ig_orders: int = 0  # ... and immune globulin


def answer(record: PatientRecord, service: Service, hook_instance: str, links=None,
           modes: RuleModes = ALL_ON) -> Answer:
    """The cards of ``service``'s rule groups (with the links ``links(cards)`` adds, when given), the encoded
    CDS Hooks response, and what the audit keeps: the site's ``off`` rules are not evaluated, the cards of
    its ``shadow`` rules are split off before the response, and the call's orders are counted."""
    evaluation = _evaluate(record, service.engine_hook, hook_instance, service.rule_groups, modes.off)
    if evaluation is None:
        cards, ladder, ig = [evaluation_failed_card()], 0, 0
    else:
        orders = evaluation.facts.the_orders
        cards = evaluation.wire_cards
        ig = sum(1 for o in orders if o.is_ig)
        ladder = sum(1 for o in orders if o.is_ladder and not o.is_ig)
    shown, shadow = modes.split(cards)
    if links is not None:
        links(shown)
    return Answer(shown, shadow, encode_response(shown), ladder, ig)
