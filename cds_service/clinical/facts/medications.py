"""Reader of the medication records (statements, requests, administrations, dispenses): the exposures
to ladder drugs and immune globulin (B2-B3, A3-A5, A8-A9), and current drugs that are risk factors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .. import sig
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
from .fhir import (
    PERIOD_DAYS,
    classify_stop_reason,
    dosage_bounds,
    dosage_text,
    dose_mg_of,
    listify,
    parse_dt,
    per_day_of,
    ref_of,
    route_kind,
    strength_mg,
)
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
_ORDERING_INTENTS = ("order", "original-order", "reflex-order", "filler-order", "instance-order", "")
_NS_REASON = frozenset({"ns.specific", "ns.neuromuscular", "ns.manifestation"})


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
    bounds: list[tuple[datetime | None, datetime | None]] | None = None  # dosage_bounds of each dosage, if read


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
                     conditions_by_reference: dict[str, ConceptMatch],
                     ns_references: frozenset[str] | set[str] = frozenset()) -> MedicationsPart:
    """``conditions_by_reference``: the value sets of the read Conditions, for reasonReference (A3, A4);
    ``ns_references``: the Conditions read as neurosarcoidosis (a reason naming NS itself, decision 19)."""
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
            exp = exposure(res, rtype, concept, m, status_raw, now, th, term, conditions_by_reference,
                           ns_references)
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
    bounds = p.bounds = [dosage_bounds(d) for d in p.dosages]
    first = last = None
    every_line_ends = True
    for b, e in bounds:  # one loop: the earliest start and the latest end of the lines
        if b and (first is None or b < first):
            first = b
        if not e:
            every_line_ends = False
        elif last is None or e > last:
            last = e
    if first is not None:
        p.start = first  # a taper in several lines starts with its first line (decision 46)
    if bounds and every_line_ends:
        p.end = last
    for d in p.dosages:
        if p.end is not None or not p.start:
            break  # only a line's duration from the start can still give the end
        rep = _dict(_dict(d.get("timing")).get("repeat"))
        bd = rep.get("boundsDuration")
        if isinstance(bd, dict) and isinstance(bd.get("value"), int | float):
            p.end = p.start + timedelta(days=bd["value"] * PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit")
                                                                                or "d"), 1))
    esd = disp.get("expectedSupplyDuration")
    if p.end is None and p.start and isinstance(esd, dict) and isinstance(esd.get("value"), int | float):
        repeats = disp.get("numberOfRepeatsAllowed") if isinstance(disp.get("numberOfRepeatsAllowed"), int) else 0
        p.end = p.start + timedelta(days=esd["value"] * (1 + repeats))
    if str(res.get("intent") or "").lower() not in _ORDERING_INTENTS:
        p.status = "planned"  # plan, proposal, directive, option: an intention, not exposure (decision 45)
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
             th: Thresholds, term: Terminology, conditions_by_reference: dict[str, ConceptMatch],
             ns_references: frozenset[str] | set[str] = frozenset()) -> Exposure | None:
    """One medication record as an exposure; None when it is no exposure (a topical glucocorticoid, A5)."""
    p = _PERIOD_OF[rtype](res, status_raw, now)
    if p is None:
        return None
    route = _route_of(p.dosages, m.text)
    ing, cls = m.ingredient, m.drug_class
    atc = concept_codes(concept, ATC) if cls in (GC, IG) else ()
    exp = Exposure(ref_of(res), rtype, concept_label(concept), ing.key if ing else None, cls, p.status, status_raw,
                   p.start, p.end, route=route, administrations=p.administrations)
    now_step = _add_dose(exp, p.dosages, m.text, rtype, now, p.bounds)
    if exp.ingredient == "methotrexate":
        _methotrexate_schedule(exp, p.dosages)
    if cls == GC and ing is not None:
        if route in NON_SYSTEMIC or any(c.startswith(_TOPICAL_ATC) for c in atc):
            return None  # A5
        if exp.daily_mg is not None and ing.pred_equiv:
            exp.pred_eq_mg = exp.daily_mg * ing.pred_equiv
            exp.pulse = route == "iv" and exp.pred_eq_mg >= th.gc_pulse_mg
            if now_step is not None and now_step.daily_mg is not None:
                exp.current_pred_eq_mg = now_step.daily_mg * ing.pred_equiv
    exp.reason_sarcoid, exp.reason_replacement, exp.reason_ns = treatment_reasons(
        res, term, conditions_by_reference, ns_references)
    if rtype == "MedicationAdministration" and p.start is not None:
        window = infusion_window(exp, th)
        if window is not None and p.start >= now - timedelta(days=window):
            exp.status = "current"
    if cls == IG:
        exp.ig_kind = administration_kind(m.text, route, atc)[0]
    if rtype in ("MedicationStatement", "MedicationRequest") and (status_raw == "stopped" or "statusReason" in res):
        texts = [concept_text(sr) for sr in listify(res.get("statusReason"))]
        exp.stop_reason = classify_stop_reason(texts) if status_raw == "stopped" or any(texts) else None
        if exp.stop_reason:
            exp.stop_text = "; ".join(t for t in texts if t)[:80]
    return exp


def _route_of(dosages: list[dict[str, Any]], product: str) -> str | None:
    """The route of the first dosage line that names one, else the one the product's name implies."""
    for d in dosages:
        r = route_kind(d.get("route"))
        if r:
            return r
    return route_kind(None, product)


Bounds = list[tuple[datetime | None, datetime | None]]


def _add_dose(exp: Exposure, dosages: list[dict[str, Any]], text: str, rtype: str,
              now: datetime, bounds: Bounds | None = None) -> sig.DoseStep | None:
    """Dose per administration, administrations per day and the daily dose of the highest step; returns the
    step in force at ``now`` (None: unknown). Each dosage line is a step dated by its bounds (``bounds``: those
    already read, one per dosage); a glucocorticoid line without a structured dose is read from its
    instructions text (decisions 25, 46). Nothing readable leaves the dose unknown: a frequency is never assumed."""
    steps: list[sig.DoseStep] = []
    for i, d in enumerate(dosages):
        mg = dose_mg_of(d, text)
        pdays = per_day_of(d)
        if rtype == "MedicationAdministration" and pdays is None:
            pdays = 1.0
        line_start, line_end = bounds[i] if bounds is not None else dosage_bounds(d)
        if mg is None and exp.drug_class == GC:
            parsed = sig.parse_sig(dosage_text(d), strength_mg(text))
            if pdays is not None:  # structured timing with the dose only in words ("take 2 tablets", BID)
                parsed = [replace(st, per_day=pdays) if st.per_day is None else st for st in parsed]
            steps += sig.schedule(parsed, line_start or exp.start)
            continue
        if mg is not None:
            exp.dose_mg = mg if exp.dose_mg is None else max(exp.dose_mg, mg)
        if pdays is not None:
            exp.per_day = pdays
        if mg is not None and pdays is not None:
            steps.append(sig.DoseStep(mg * pdays, line_start or exp.start, line_end))
        if pdays is not None and pdays >= 1 and exp.ingredient == "methotrexate":
            exp.daily_frequency = True
    top = sig.highest(steps)
    if top is not None:
        exp.daily_mg = top.daily_mg
    return sig.current(steps, now) if len(steps) > 1 else top


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


def treatment_reasons(res: dict[str, Any], term: Terminology, conditions_by_reference: dict[str, ConceptMatch],
                      ns_references: frozenset[str] | set[str] = frozenset()) -> tuple[bool | None, bool, bool]:
    """(reason points to sarcoidosis/NS, reason is adrenal replacement, reason is neurosarcoidosis itself);
    None = no reason recorded (A3, A4). Neurosarcoidosis itself (decision 19): a neurosarcoidosis code, or
    a reference to a Condition read as neurosarcoidosis."""
    found = sarcoid = replacement = ns = False
    names_seen = []
    for rc in listify(res.get("reasonCode")):
        found = True
        names_seen.append(term.match(rc).names)
    for rr in listify(res.get("reasonReference")):
        if isinstance(rr, dict) and isinstance(rr.get("reference"), str):
            found = True
            target = rr["reference"].split("/_history")[0]
            ns = ns or target in ns_references
            m = conditions_by_reference.get(target)
            if m is not None:
                names_seen.append(m.names)
    for n in names_seen:
        sarcoid = sarcoid or "sarcoidosis" in n or "ns.manifestation" in n
        replacement = replacement or "adrenal-insufficiency" in n
        ns = ns or bool(n & _NS_REASON)
    return (sarcoid if found else None), replacement, ns
