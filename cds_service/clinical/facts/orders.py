"""Reader of the draft orders of the hook (the orders being placed): drug, ladder tier, route, dose."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import plausibility
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
    immune_globulin_route,
)
from ..thresholds import Thresholds
from .fhir import PERIOD_DAYS, dose_mg_of, listify, parse_dt, per_day_of, ref_of, route_kind
from .medications import medication_concept, medication_index, non_systemic_atc
from .model import NON_SYSTEMIC, OrderedDose, PlannedOrder, fmt
from .validation import Validator

_IV_TEXT_RE = re.compile(r"intravenous|\bivig\b|\bigiv\b", re.IGNORECASE)
_DAILY_TEXT_RE = re.compile(r"\bdaily\b|every day|once a day")


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
        valid = m.drug_class is None or v.valid(res, concept)
        part.planned_orders.append(planned_order(res, rtype, ref, concept, m, selected, valid, th))
    if sel and not any(o.selected for o in part.planned_orders):
        v.notes.append("selections did not match any draft order; all draft orders were evaluated")
    part.notes, part.skipped = v.notes, v.skipped
    return part


def planned_order(res: dict[str, Any], rtype: str, ref: str, concept: Any, m: ConceptMatch, selected: bool,
                  valid: bool, th: Thresholds) -> PlannedOrder:
    """The order's drug, its ladder tier (decision 6), route, and the dose figures its rules read. An order
    that is not valid FHIR keeps its name but counts as no drug."""
    dosages = [d for d in listify(res.get("dosageInstruction")) if isinstance(d, dict)]
    route = next((r for r in (route_kind(d.get("route")) for d in dosages) if r), None) or route_kind(None, m.text)
    ing = m.ingredient
    tier = ing.tier if ing else LADDER_TIER.get(m.drug_class or "")
    po = PlannedOrder(ref, rtype, concept_label(concept), ing.key if ing else None, m.drug_class, tier, selected,
                      route)
    if not valid:
        po.drug_class = po.tier = None
    elif m.drug_class == IG:
        text = m.text + " " + " ".join(str(d.get("text") or "") for d in dosages)
        atc = concept_codes(concept, ATC)
        po.ig_kind = immune_globulin_route(text, route, atc)
        po.ig_route_assumed = route is None and "J06BA02" not in atc and not _IV_TEXT_RE.search(text)
        po.dose = ordered_ig_dose(res, th)
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


# ------------------------------------------------------------------------------ IVIG order dose


def _plausible_dose(g: float | None, gpk: float | None, problems: list[str]) -> tuple[float | None, float | None]:
    """The ordered amounts, each dropped (with the reason) when outside the plausible range."""
    for kind, value, unit in (("ivig_dose_g", g, "g"), ("ivig_dose_g_per_kg", gpk, "g/kg")):
        why = plausibility.problem(kind, value, unit) if value is not None else None
        if why:
            problems.append(f"dose {why}; dose not checked")
            g, gpk = (None, gpk) if kind == "ivig_dose_g" else (g, None)
    return g, gpk


def ordered_ig_dose(res: dict[str, Any], th: Thresholds) -> OrderedDose:
    """Read dose and schedule of an immune globulin order (g, mg, g/kg, mg/kg, mL at the set concentration)."""
    od = OrderedDose()
    for d in listify(res.get("dosageInstruction")):
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("text"), str):
            od.text = (od.text + " " + d["text"]).strip()
        g = gpk = None
        for dar in listify(d.get("doseAndRate")):
            q = dar.get("doseQuantity") if isinstance(dar, dict) else None
            if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
                continue
            unit = str(q.get("code") or q.get("unit") or "").strip()
            v = float(q["value"])
            u = unit.lower().replace(" ", "")
            if u in ("g", "gram", "grams"):
                g = v
            elif u == "mg":
                g = v / 1000
            elif u in ("g/kg", "gm/kg"):
                gpk = v
            elif u == "mg/kg":
                gpk = v / 1000
            elif u in ("ml", "milliliter"):
                g = v * th.ivig_concentration_percent / 100
                od.problems.append(f"dose ordered as {fmt(v)} mL; grams computed at "
                                   f"{fmt(th.ivig_concentration_percent)} %")
            else:
                od.problems.append(f"dose unit {unit!r} not understood; dose not checked")
            g, gpk = _plausible_dose(g, gpk, od.problems)
            break
        pdays = per_day_of(d)
        days = None
        t = d.get("timing") if isinstance(d.get("timing"), dict) else {}
        rep = t.get("repeat") if isinstance(t.get("repeat"), dict) else {}
        count = rep.get("countMax") or rep.get("count")
        bd = rep.get("boundsDuration")
        bp = rep.get("boundsPeriod")
        if isinstance(count, int | float) and count > 0:
            days = count / pdays if pdays else float(count)
        elif isinstance(bd, dict) and isinstance(bd.get("value"), int | float):
            days = bd["value"] * PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit") or "d"), 1)
        elif isinstance(bp, dict):
            s, e = parse_dt(bp.get("start")), parse_dt(bp.get("end"))
            if s and e:
                days = max(1.0, (e.date() - s.date()).days + 1)
        if pdays is None and days is not None:
            pdays = 1.0
        od.segments.append((g, gpk, pdays, days))
    # combine segments (sequential parts of one course)
    if od.segments:
        g0, gpk0, pd0, _ = od.segments[0]
        od.per_admin_g, od.per_admin_g_per_kg, od.admins_per_day = g0, gpk0, pd0
        known = [s for s in od.segments if s[3] is not None]
        od.days = sum(s[3] for s in known) if known and len(known) == len(od.segments) else None  # type: ignore[misc]
    if od.days is None:
        disp = res.get("dispenseRequest") if isinstance(res.get("dispenseRequest"), dict) else {}
        esd = disp.get("expectedSupplyDuration")
        if isinstance(esd, dict) and isinstance(esd.get("value"), int | float):
            od.days = esd["value"] * PERIOD_DAYS.get(str(esd.get("code") or esd.get("unit") or "d"), 1)
            if od.admins_per_day is None:
                od.admins_per_day = 1.0
    return od


# ============================================================================================ entry point
