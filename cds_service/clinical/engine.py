"""The single entry point of the clinical engine.

``evaluate(record, hook)`` builds the facts, the treatment stage, runs the rules and renders the
cards. It is synchronous, does no I/O after :func:`warm_up`, and is deterministic apart from uuids.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from cds_service import models

from . import markup
from .cards import card_library, compile_all, render_all
from .facts import Facts, build_facts
from .record import PatientRecord
from .rules import GROUPS, RULE_IDS, run_rules
from .stages import StageResult, compute_stage
from .terminology import get_terminology
from .thresholds import Thresholds, get_thresholds

HOOKS = ("order-select", "order-sign", "patient-view")


@dataclass
class Evaluation:
    wire_cards: list[models.WireCard]  # sorted critical > warning > info; what the response carries
    facts: Facts
    stage: str  # "S0" ... "S7", "S2b", "S3R", "S3I"
    rule_ids: list[str] = field(default_factory=list)  # of the cards, in card order
    stage_detail: StageResult | None = None

    @property
    def cards(self) -> list[models.Card]:
        """The cards as validated wire models (made on each read: for tests and readers off the request path)."""
        return [c.validated() for c in self.wire_cards]


def evaluate(record: PatientRecord, hook: str, *, thresholds: Thresholds | None = None,
             rule_groups: Collection[str] | None = None, rules_off: Collection[str] = frozenset()) -> Evaluation:
    """Facts, stage, rules and cards for ``record`` under ``hook``.

    ``rule_groups``: the rule groups to evaluate ("ladder", "ivig-indication", "ivig-safety"; None: the
    hook's default, :func:`~cds_service.clinical.rules.default_groups`); ``rules_off``: rule ids never
    evaluated (:data:`~cds_service.clinical.rules.RULE_IDS`). Unknown groups or rule ids are a ValueError.
    """
    th = thresholds or get_thresholds()
    for kind, asked, known in (("rule group", rule_groups or (), GROUPS), ("rule id", rules_off, RULE_IDS)):
        unknown = set(asked) - set(known)
        if unknown:
            raise ValueError(f"unknown {kind}(s): {', '.join(sorted(unknown))}")
    try:
        result = _evaluate(record, hook, th, rule_groups, rules_off)
    except Exception:  # noqa: BLE001 - malformed data the cheap checks let through: isolate it, then retry
        cleaned = without_invalid_resources(record)
        if cleaned is None:
            raise
        result = _evaluate(cleaned, hook, th, rule_groups, rules_off)
        record.notes[:] = cleaned.notes
    _add_data_notes(result.wire_cards, [*record.notes, *result.facts.notes])
    return result


def _evaluate(record: PatientRecord, hook: str, th: Thresholds, rule_groups: Collection[str] | None,
              rules_off: Collection[str]) -> Evaluation:
    facts = build_facts(record, th)
    stage = compute_stage(facts, th)
    fired = run_rules(facts, stage, hook, th, groups=rule_groups, off=rules_off)
    cards = render_all(fired, facts, th)
    rule_ids = [str((c.extension or {}).get(models.RULE_ID_EXTENSION)) for c in cards]
    return Evaluation(wire_cards=cards, facts=facts, stage=stage.stage, rule_ids=rule_ids, stage_detail=stage)


def without_invalid_resources(record: PatientRecord) -> PatientRecord | None:
    """A copy of ``record`` without the prefetched resources that are not valid FHIR R4, each one noted.

    The rules read resources through cheap dict checks and validate only what they select, so a malformed
    element elsewhere (``"coding": 5``) can still trip them. Rather than lose every card for one bad
    resource, the full ``fhir.resources`` validation (costly, so only on this rare path) finds and drops
    it. Draft orders are kept as they are: silently dropping the order being placed would hide its cards.
    Returns None when nothing was dropped (the failure lies elsewhere).
    """
    from fhir.resources.R4B import get_fhir_model_class

    def valid(res: dict) -> bool:
        try:
            get_fhir_model_class(res["resourceType"]).model_validate(res)
        except KeyError:
            return True  # a type the R4B package does not know: the rules do not read it either
        except Exception:  # noqa: BLE001 - pydantic ValidationError, TypeError on junk shapes
            return False
        return True

    cleaned = PatientRecord(patient_id=record.patient_id, now=record.now, notes=list(record.notes),
                            draft_orders=record.draft_orders, selections=record.selections)
    dropped = 0
    if record.patient is not None:
        if valid(record.patient):
            cleaned.patient = record.patient
        else:
            dropped += 1
            cleaned.notes.append("skipped the Patient resource: not valid FHIR R4 (age and sex unknown)")
    for rtype, resources in record.resources.items():
        keep = []
        for res in resources:
            if isinstance(res, dict) and valid(res):
                keep.append(res)
            else:
                dropped += 1
                rid = res.get("id") if isinstance(res, dict) else None
                cleaned.notes.append(f"skipped {rtype}/{rid if isinstance(rid, str) else '?'}: not valid FHIR R4")
        cleaned.resources[rtype] = keep
    return cleaned if dropped else None


MAX_DATA_NOTES = 6


def _add_data_notes(cards: list[models.WireCard] | list[models.Card], notes: list[str]) -> None:
    """Tell the clinician what could not be read: a skipped resource or an unavailable query can change
    the advice, so it is said on the cards (never only in a log)."""
    unique = list(dict.fromkeys(n for n in notes if n))
    if not unique or not cards:
        return
    shown = unique[:MAX_DATA_NOTES]
    more = len(unique) - len(shown)
    text = "\n\n**Data notes (what could not be read):**\n\n" + "\n".join(f"- {markup.text(n)}" for n in shown)
    if more:
        text += f"\n- … and {more} more"
    for card in cards:
        card.detail = (card.detail or "") + text


def warm_up() -> None:
    """Load value sets, card texts and the shape checks the facts builder validates with.

    The ``fhir.resources`` models are not loaded here: they are needed only for a resource the shape check
    (:mod:`.facts.shapes`) cannot vouch for, and load then."""
    get_thresholds()
    get_terminology()
    card_library()
    compile_all()
    # one tiny evaluation so every code path's lazy imports and caches are primed
    rec = PatientRecord(patient_id="warm-up")
    rec.add({"resourceType": "Patient", "id": "warm-up", "gender": "female", "birthDate": "1970-01-01"})
    rec.add({"resourceType": "Condition", "id": "w1", "subject": {"reference": "Patient/warm-up"},
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "230193008"}]}})
    rec.draft_orders.append({"resourceType": "MedicationRequest", "id": "w2", "status": "draft", "intent": "order",
                             "subject": {"reference": "Patient/warm-up"},
                             "medicationCodeableConcept": {"text": "Immune globulin (human) IV"}})
    evaluate(rec, "order-sign")
