"""Reader of the medication records (statements, requests, administrations, dispenses): the exposures
to ladder drugs and immune globulin (B2-B3, A3-A5, A8-A9), and current drugs that are risk factors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..immune_globulin import administration_kind
from ..record import PatientRecord
from ..terminology import (
    ANTI_TNF,
    ATC,
    GC,
    IG,
    RITUXIMAB,
    ConceptMatch,
    Terminology,
    concept_codes,
    concept_label,
    concept_text,
)
from ..thresholds import Thresholds
from ..thrombosis import anticoagulant_in, estrogen_is_local, treatment_dose
from .fhir import PERIOD_DAYS, classify_stop_reason, dose_mg_of, listify, parse_dt, per_day_of, ref_of, route_kind
from .model import NON_SYSTEMIC, Exposure, FactRef, fmt
from .patient import now_of
from .validation import Validator

MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense")
RISK_DRUG_GROUPS = frozenset({"estrogen-thrombosis-risk", "nephrotoxic-drug"})
_STATEMENT_STATUS = {"active": "current", "on-hold": "current", "completed": "past", "stopped": "past",
                     "intended": "planned", "unknown": "unknown"}
_REQUEST_STATUS = {"active": "current", "on-hold": "current", "completed": "past", "stopped": "past",
                   "draft": "planned", "unknown": "unknown"}
_NOT_GIVEN = ("entered-in-error", "cancelled", "not-taken", "not-done")
_TOPICAL_ATC = ("D07", "R01AD", "R03BA", "S01BA", "S01CA", "S02B", "S03B", "A07EA", "C05AA", "A01AC")
_DAILY_TEXT_RE = re.compile(r"\bdaily\b|every day|once a day")


@dataclass
class MedicationsPart:
    exposures: dict[str, list[Exposure]] = field(default_factory=dict)  # drug class -> exposures
    risk_drugs: list[Exposure] = field(default_factory=list)  # estrogen / nephrotoxic
    anticoagulants: list[tuple[FactRef, bool | None]] = field(default_factory=list)  # (fact, treatment dose?)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Period:
    """When and how a medication record says the drug was taken."""

    dosages: list[dict[str, Any]] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None
    status: str = "unknown"  # current | past | planned | unknown
    administrations: int = 0


def medication_index(record: PatientRecord) -> dict[str, dict[str, Any]]:
    """The record's Medication resources by id (a later one with the same id wins)."""
    return {med["id"]: med for med in record.of_type("Medication")
            if isinstance(med, dict) and isinstance(med.get("id"), str)}


def medication_concept(res: dict[str, Any], medications: dict[str, dict[str, Any]]) -> Any:
    """The drug concept: medicationCodeableConcept, else the contained or referenced Medication's code."""
    cc = res.get("medicationCodeableConcept")
    if isinstance(cc, dict):
        return cc
    mref = res.get("medicationReference")
    if not (isinstance(mref, dict) and isinstance(mref.get("reference"), str)):
        return None
    r = mref["reference"]
    if r.startswith("#"):
        for c in listify(res.get("contained")):
            if isinstance(c, dict) and c.get("id") == r[1:]:
                return c.get("code")
    med = medications.get(r.rsplit("/", 1)[-1])
    if med is not None:
        return med.get("code")
    if isinstance(mref.get("display"), str):
        return {"text": mref["display"]}
    return None


def read_medications(record: PatientRecord, term: Terminology, th: Thresholds,
                     conditions_by_reference: dict[str, ConceptMatch]) -> MedicationsPart:
    """``conditions_by_reference``: the value sets of the read Conditions, for reasonReference (A3, A4)."""
    part = MedicationsPart()
    v = Validator()
    now = now_of(record)
    medications = medication_index(record)
    for rtype in MEDICATION_TYPES:
        for res in record.of_type(rtype):
            if not isinstance(res, dict):
                continue
            concept = medication_concept(res, medications)
            m = term.match(concept, medication=True)
            risk_groups = m.names & RISK_DRUG_GROUPS
            status_raw = str(res.get("status") or "").lower()
            if m.drug_class is None and not risk_groups:
                anticoagulant = _anticoagulant(res, rtype, concept, m, status_raw, now, th, term, v)
                if anticoagulant is not None:
                    part.anticoagulants.append(anticoagulant)
                continue
            if status_raw in _NOT_GIVEN:
                continue
            exp = exposure(res, rtype, concept, m, status_raw, now, th, term, conditions_by_reference)
            if exp is None:
                continue
            if exp.status == "unknown":
                v.notes.append(f"{exp.label} ({exp.reference}): status unknown, counted as exposure; "
                               "please reconcile the medication list")
            if not v.valid(res, concept) or exp.status == "planned":
                continue  # planned records are not exposure; draft orders come from the hook context
            if m.drug_class is not None:
                part.exposures.setdefault(m.drug_class, []).append(exp)
            if risk_groups:
                exp.groups = frozenset(risk_groups)
                exp.local_estrogen = "estrogen-thrombosis-risk" in risk_groups and _local(res, m.text)
                part.risk_drugs.append(exp)
    part.notes, part.skipped = v.notes, v.skipped
    return part


def _local(res: dict[str, Any], product: str) -> bool:
    """Estrogen applied in the vagina at a local dose (decision 38)."""
    dosages = [d for d in listify(res.get("dosage") or res.get("dosageInstruction")) if isinstance(d, dict)]
    route = next((d.get("route") for d in dosages if isinstance(d.get("route"), dict)), None)
    return estrogen_is_local(route, product, " ".join(str(d.get("text") or "") for d in dosages))


_UNITS = ("[iu]", "iu", "u", "[u]", "units")


def _anticoagulant(res: dict[str, Any], rtype: str, concept: Any, m: ConceptMatch, status_raw: str, now: datetime,
                   th: Thresholds, term: Terminology, v: Validator) -> tuple[FactRef, bool | None] | None:
    """A current anticoagulant and whether its dose treats (True), prevents (False) or was not read (None):
    decision 38 tells an anticoagulated patient so, and gives them no prophylaxis advice."""
    drug = anticoagulant_in(m.text or concept_text(concept))
    if drug is None or rtype == "MedicationDispense" or status_raw in _NOT_GIVEN:
        return None
    exp = exposure(res, rtype, concept, m, status_raw, now, th, term, {})
    if exp is None or not exp.current or not v.valid(res, concept):
        return None
    units = None
    for d in listify(res.get("dosage") or res.get("dosageInstruction")):
        for dar in listify(d.get("doseAndRate") if isinstance(d, dict) else None):
            q = dar.get("doseQuantity") if isinstance(dar, dict) else None
            if isinstance(q, dict) and isinstance(q.get("value"), int | float) and \
                    str(q.get("code") or q.get("unit") or "").lower() in _UNITS:
                units = float(q["value"]) * (per_day_of(d) or 1.0)
    treats = treatment_dose(drug, exp.daily_mg, exp.route, units)
    dose = (f"{fmt(exp.daily_mg)} mg/day" if exp.daily_mg is not None else
            f"{fmt(units)} units/day" if units is not None else "dose not read")
    kind = {True: "treatment dose", False: "prophylactic dose", None: "dose not read"}[treats]
    return FactRef(f"Anticoagulant ({drug.key})", f"{exp.label}, {dose}" + ("" if treats is None else f" ({kind})"),
                   exp.reference), treats


def _statement_period(res: dict[str, Any], status_raw: str, now: datetime) -> _Period:
    p = _Period([d for d in listify(res.get("dosage")) if isinstance(d, dict)],
                parse_dt(res.get("effectiveDateTime")), None, _STATEMENT_STATUS.get(status_raw, "unknown"))
    per = res.get("effectivePeriod")
    if isinstance(per, dict):
        p.start = parse_dt(per.get("start")) or p.start
        p.end = parse_dt(per.get("end"))
    if p.status == "current" and p.end is not None and p.end < now:
        p.status = "past"
    return p


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _request_period(res: dict[str, Any], status_raw: str, now: datetime) -> _Period:
    p = _Period([d for d in listify(res.get("dosageInstruction")) if isinstance(d, dict)],
                parse_dt(res.get("authoredOn")), None, _REQUEST_STATUS.get(status_raw, "unknown"))
    disp = _dict(res.get("dispenseRequest"))
    vp = _dict(disp.get("validityPeriod"))
    p.start = parse_dt(vp.get("start")) or p.start
    p.end = parse_dt(vp.get("end"))
    for d in p.dosages:
        rep = _dict(_dict(d.get("timing")).get("repeat"))
        bp = _dict(rep.get("boundsPeriod"))
        p.start = parse_dt(bp.get("start")) or p.start
        p.end = parse_dt(bp.get("end")) or p.end
        bd = rep.get("boundsDuration")
        if p.end is None and p.start and isinstance(bd, dict) and isinstance(bd.get("value"), int | float):
            p.end = p.start + timedelta(days=bd["value"] * PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit")
                                                                                or "d"), 1))
    esd = disp.get("expectedSupplyDuration")
    if p.end is None and p.start and isinstance(esd, dict) and isinstance(esd.get("value"), int | float):
        repeats = disp.get("numberOfRepeatsAllowed") if isinstance(disp.get("numberOfRepeatsAllowed"), int) else 0
        p.end = p.start + timedelta(days=esd["value"] * (1 + repeats))
    if str(res.get("intent") or "").lower() == "proposal":
        p.status = "planned"
    if p.status == "current" and p.end is not None and p.end < now:
        p.status = "past"
    return p


def _administration_period(res: dict[str, Any], status_raw: str, now: datetime) -> _Period:
    d = res.get("dosage")
    p = _Period([d] if isinstance(d, dict) else [], parse_dt(res.get("effectiveDateTime")), None, "past", 1)
    per = res.get("effectivePeriod")
    if isinstance(per, dict):
        p.start = parse_dt(per.get("start")) or p.start
        p.end = parse_dt(per.get("end"))
    p.end = p.end or p.start  # made current by the class's infusion window (infusion_window)
    return p


def _dispense_period(res: dict[str, Any], status_raw: str, now: datetime) -> _Period | None:
    if status_raw not in ("completed", ""):
        return None
    p = _Period([d for d in listify(res.get("dosageInstruction")) if isinstance(d, dict)],
                parse_dt(res.get("whenHandedOver")))
    ds = res.get("daysSupply")
    if p.start and isinstance(ds, dict) and isinstance(ds.get("value"), int | float):
        p.end = p.start + timedelta(days=ds["value"])
    p.status = "current" if p.end and p.end >= now else "past"
    return p


_PERIOD_OF = {"MedicationStatement": _statement_period, "MedicationRequest": _request_period,
              "MedicationAdministration": _administration_period, "MedicationDispense": _dispense_period}


def exposure(res: dict[str, Any], rtype: str, concept: Any, m: ConceptMatch, status_raw: str, now: datetime,
             th: Thresholds, term: Terminology, conditions_by_reference: dict[str, ConceptMatch]) -> Exposure | None:
    """One medication record as an exposure; None when it is no exposure (a topical glucocorticoid, A5)."""
    p = _PERIOD_OF[rtype](res, status_raw, now)
    if p is None:
        return None
    route = next((r for r in (route_kind(d.get("route")) for d in p.dosages) if r), None) or route_kind(None, m.text)
    ing, cls = m.ingredient, m.drug_class
    exp = Exposure(ref_of(res), rtype, concept_label(concept), ing.key if ing else None, cls, p.status, status_raw,
                   p.start, p.end, route=route, administrations=p.administrations)
    _add_dose(exp, p.dosages, m.text, rtype)
    if exp.ingredient == "methotrexate":
        _methotrexate_schedule(exp, p.dosages)
    if cls == GC and ing is not None:
        if route in NON_SYSTEMIC or non_systemic_atc(concept):
            return None  # A5
        if exp.daily_mg is not None and ing.pred_equiv:
            exp.pred_eq_mg = exp.daily_mg * ing.pred_equiv
            exp.pulse = route == "iv" and exp.pred_eq_mg >= th.gc_pulse_mg
        exp.reason_sarcoid, exp.reason_replacement = treatment_reasons(res, term, conditions_by_reference)
    if rtype == "MedicationAdministration" and p.start is not None:
        window = infusion_window(exp, th)
        if window is not None and p.start >= now - timedelta(days=window):
            exp.status = "current"
    if cls == IG:
        exp.ig_kind = administration_kind(m.text, route, concept_codes(concept, ATC))[0]
    if rtype in ("MedicationStatement", "MedicationRequest"):
        texts = [concept_text(sr) for sr in listify(res.get("statusReason"))]
        exp.stop_reason = classify_stop_reason(texts) if status_raw == "stopped" or any(texts) else None
        if exp.stop_reason:
            exp.stop_text = "; ".join(t for t in texts if t)[:80]
    return exp


def _add_dose(exp: Exposure, dosages: list[dict[str, Any]], text: str, rtype: str) -> None:
    """Dose per administration, administrations per day and the daily dose (the highest recorded)."""
    for d in dosages:
        mg = dose_mg_of(d, text)
        pdays = per_day_of(d)
        if rtype == "MedicationAdministration" and pdays is None:
            pdays = 1.0
        if mg is not None:
            exp.dose_mg = mg if exp.dose_mg is None else max(exp.dose_mg, mg)
            if pdays is None and exp.drug_class == GC:
                pdays = 1.0  # GC without timing: assumed once daily
        if pdays is not None:
            exp.per_day = pdays
        if mg is not None and pdays is not None:
            daily = mg * pdays
            exp.daily_mg = daily if exp.daily_mg is None else max(exp.daily_mg, daily)
        if pdays is not None and pdays >= 1 and exp.ingredient == "methotrexate":
            exp.daily_frequency = True


def _methotrexate_schedule(exp: Exposure, dosages: list[dict[str, Any]]) -> None:
    """Weekly dose, and a daily schedule recorded in free text (A9)."""
    if exp.dose_mg is not None and exp.per_day is not None:
        exp.weekly_mg = exp.dose_mg * exp.per_day * 7
    if not exp.daily_frequency and exp.per_day is None:
        for d in dosages:
            t = str(d.get("text") or "").lower()
            if _DAILY_TEXT_RE.search(t) and "week" not in t:
                exp.daily_frequency = True


def infusion_window(exp: Exposure, th: Thresholds) -> int | None:
    """Days an administration counts as current therapy, by drug class (None: not an infusion drug)."""
    if exp.ingredient == "cyclophosphamide":
        return th.infusion_current_days_cyclophosphamide
    if exp.drug_class == GC:
        return th.infusion_current_days_gc_pulse if exp.pulse else 2
    return {ANTI_TNF: th.infusion_current_days_anti_tnf, IG: th.infusion_current_days_ivig,
            RITUXIMAB: th.infusion_current_days_rituximab}.get(exp.drug_class or "")


def non_systemic_atc(concept: Any) -> bool:
    return any(c.startswith(_TOPICAL_ATC) for c in concept_codes(concept, ATC))


def treatment_reasons(res: dict[str, Any], term: Terminology,
                      conditions_by_reference: dict[str, ConceptMatch]) -> tuple[bool | None, bool]:
    """(reason points to sarcoidosis/NS, reason is adrenal replacement); None = no reason recorded (A3, A4)."""
    found = sarcoid = replacement = False
    names_seen = []
    for rc in listify(res.get("reasonCode")):
        found = True
        names_seen.append(term.match(rc).names)
    for rr in listify(res.get("reasonReference")):
        if isinstance(rr, dict) and isinstance(rr.get("reference"), str):
            found = True
            m = conditions_by_reference.get(rr["reference"].split("/_history")[0])
            if m is not None:
                names_seen.append(m.names)
    for n in names_seen:
        sarcoid = sarcoid or "sarcoidosis" in n or "ns.manifestation" in n
        replacement = replacement or "adrenal-insufficiency" in n
    return (sarcoid if found else None), replacement
