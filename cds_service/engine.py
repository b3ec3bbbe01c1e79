"""The single entry point of the clinical engine.

``evaluate(record, hook)`` builds the facts, the treatment stage, runs the rules and renders the
cards. It is synchronous, does no I/O after :func:`warm_up`, and is deterministic apart from uuids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import models
from .cards import card_library, render_all
from .facts import Facts, build_facts
from .record import PatientRecord
from .rules import run_rules
from .stages import StageResult, compute_stage
from .terminology import get_terminology
from .thresholds import Thresholds, get_thresholds

HOOKS = ("order-select", "order-sign", "patient-view")


@dataclass
class Evaluation:
    cards: list[models.Card]  # sorted critical > warning > info
    facts: Facts
    stage: str  # "S0" ... "S7", "S2b", "S3R", "S3I"
    rule_ids: list[str] = field(default_factory=list)  # of the cards, in card order
    stage_detail: StageResult | None = None


def evaluate(record: PatientRecord, hook: str, *, thresholds: Thresholds | None = None) -> Evaluation:
    th = thresholds or get_thresholds()
    facts = build_facts(record, th)
    stage = compute_stage(facts, th)
    fired = run_rules(facts, stage, hook, th)
    cards = render_all(fired, facts, th)
    rule_ids = [str((c.extension or {}).get(models.RULE_ID_EXTENSION)) for c in cards]
    return Evaluation(cards=cards, facts=facts, stage=stage.stage, rule_ids=rule_ids, stage_detail=stage)


def warm_up() -> None:
    """Load value sets, card texts and the FHIR models the facts builder validates with."""
    get_thresholds()
    get_terminology()
    card_library()
    from fhir.resources.R4B import get_fhir_model_class

    for rtype in ("Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest",
                  "MedicationAdministration", "MedicationDispense", "AllergyIntolerance", "Device", "Encounter",
                  "ServiceRequest"):
        get_fhir_model_class(rtype)
    # one tiny evaluation so every code path's lazy imports and caches are primed
    rec = PatientRecord(patient_id="warm-up")
    rec.add({"resourceType": "Patient", "id": "warm-up", "gender": "female", "birthDate": "1970-01-01"})
    rec.add({"resourceType": "Condition", "id": "w1", "subject": {"reference": "Patient/warm-up"},
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "230193008"}]}})
    rec.draft_orders.append({"resourceType": "MedicationRequest", "id": "w2", "status": "draft", "intent": "order",
                             "subject": {"reference": "Patient/warm-up"},
                             "medicationCodeableConcept": {"text": "Immune globulin (human) IV"}})
    evaluate(rec, "order-sign")
