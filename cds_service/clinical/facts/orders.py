"""Reader of the draft orders of the hook (the orders being placed): drug, ladder tier, route, dose."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import immune_globulin as ig
from ..record import PatientRecord
from ..terminology import (
    ATC,
    GC,
    IG,
    LADDER_TIER,
    ConceptMatch,
    Terminology,
    concept_codes,
    concept_label,
)
from ..thresholds import Thresholds
from .fhir import dose_mg_of, listify, per_day_of, ref_of, route_kind
from .medications import medication_concept, medication_index, non_systemic_atc
from .model import NON_SYSTEMIC, PlannedOrder
from .validation import Validator, problem_of

_DAILY_TEXT_RE = re.compile(r"\bdaily\b|every day|once a day")
_DOSE_ELEMENTS = ("dosageInstruction", "dispenseRequest", "dosage")


@dataclass
class OrdersPart:
    planned_orders: list[PlannedOrder] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_draft_orders(record: PatientRecord, term: Terminology, th: Thresholds) -> OrdersPart:
    part = OrdersPart()
    v = Validator()
    sel = {s.strip() for s in record.selections if isinstance(s, str)}
    sel_ids = {s.rsplit("/", 1)[-1] for s in sel}
    medications = medication_index(record)
    for res in record.draft_orders:
        if not isinstance(res, dict):
            continue
        rtype = str(res.get("resourceType") or "")
        if rtype == "MedicationRequest":
            concept = medication_concept(res, medications)
        elif rtype in ("ServiceRequest", "MedicationOrder", "DeviceRequest"):
            concept = res.get("code") or res.get("medicationCodeableConcept")
        else:
            concept = None
        ref = ref_of(res) or f"{rtype}/(no id)"
        selected = bool(sel) and (ref in sel or str(res.get("id")) in sel_ids)
        m = term.match(concept, medication=True)
        problem = problem_of(res, concept) if m.drug_class is not None else None
        valid = problem is None
        if not valid:
            # The drug is being ordered whatever the shape of the order (a DSTU2-style dosage, a string
            # where a number belongs): its checks still run on what can be read, and the cards say so.
            v.notes.append(f"{ref_of(res) or rtype}: invalid FHIR ({problem}); its drug was still checked, its dose "
                           "read where possible")
        try:
            po = planned_order(res, rtype, ref, concept, m, selected, th, medications)
        except (TypeError, AttributeError, ValueError, KeyError, IndexError):
            if valid:
                raise
            # the dose elements are too malformed to read: the drug stays, its dose is unread
            bare = {k: x for k, x in res.items() if k not in _DOSE_ELEMENTS}
            po = planned_order(bare, rtype, ref, concept, m, selected, th, medications)
        part.planned_orders.append(po)
    if sel and not any(o.selected for o in part.planned_orders):
        v.notes.append("selections did not match any draft order; all draft orders were evaluated")
    part.notes, part.skipped = v.notes, v.skipped
    return part


def planned_order(res: dict[str, Any], rtype: str, ref: str, concept: Any, m: ConceptMatch, selected: bool,
                  th: Thresholds, medications: dict[str, dict[str, Any]] | None = None) -> PlannedOrder:
    """The order's drug, its ladder tier (decision 6), route, and the dose figures its rules read."""
    dosages = [d for d in listify(res.get("dosageInstruction")) if isinstance(d, dict)]
    route = next((r for r in (route_kind(d.get("route")) for d in dosages) if r), None) or route_kind(None, m.text)
    ing = m.ingredient
    tier = ing.tier if ing else LADDER_TIER.get(m.drug_class or "")
    po = PlannedOrder(ref, rtype, concept_label(concept), ing.key if ing else None, m.drug_class, tier, selected,
                      route)
    if m.drug_class == IG:
        po.ig_kind, po.ig_route_assumed, po.ig_order = ig_draft(res, ref, po.label, concept, m.text, dosages, th,
                                                                 medications or {})
    elif m.drug_class == GC and ing is not None:
        if route in NON_SYSTEMIC or non_systemic_atc(concept):
            po.drug_class, po.tier = None, None
        else:
            for d in dosages:
                mg = dose_mg_of(d, m.text)
                pd = per_day_of(d) or (1.0 if mg is not None else None)
                if mg is not None and pd is not None and ing.pred_equiv:
                    pe = mg * pd * ing.pred_equiv
                    po.pred_eq_mg = pe if po.pred_eq_mg is None else max(po.pred_eq_mg, pe)
            po.pulse = route == "iv" and po.pred_eq_mg is not None and po.pred_eq_mg >= th.gc_pulse_mg
    elif ing is not None and ing.key == "methotrexate":
        for d in dosages:
            mg = dose_mg_of(d, m.text)
            pd = per_day_of(d)
            if pd is not None and pd >= 1:
                po.daily_frequency = True
            if mg is not None and pd is not None:
                po.weekly_mg = mg * pd * 7
            t = str(d.get("text") or "").lower()
            if pd is None and _DAILY_TEXT_RE.search(t) and "week" not in t:
                po.daily_frequency = True
    return po


# ------------------------------------------------------------------------------ immune globulin orders


def ig_draft(res: dict[str, Any], ref: str, label: str, concept: Any, product: str, dosages: list[dict[str, Any]],
             th: Thresholds, medications: dict[str, dict[str, Any]]) -> tuple[str, bool, ig.IgOrder]:
    """Route (decision 36), product concentration (decision 34) and dose lines of an immune globulin draft.
    Only the route the order states counts here: a product named "injection" is not thereby intravenous."""
    text = product + " " + " ".join(str(d.get("text") or "") for d in dosages)
    stated = next((k for k in (route_kind(d.get("route")) for d in dosages) if k), None)
    kind, assumed = ig.administration_kind(text, stated, concept_codes(concept, ATC))
    conc = ig.concentration_of(_medication_of(res, medications), product, th.ivig_concentration_percent)
    lines, problems = ig.read_ig_order(res, conc, per_day_of)
    return kind, assumed, ig.IgOrder(ref, label, kind, conc, lines, problems)


def _medication_of(res: dict[str, Any], medications: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The Medication a request names by reference (contained or in the record), for its strength."""
    mref = res.get("medicationReference")
    r = mref.get("reference") if isinstance(mref, dict) else None
    if not isinstance(r, str):
        return None
    if r.startswith("#"):
        return next((c for c in listify(res.get("contained")) if isinstance(c, dict) and c.get("id") == r[1:]), None)
    return medications.get(r.rsplit("/", 1)[-1])
# ============================================================================================ entry point
