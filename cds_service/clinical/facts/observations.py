"""Reader of Observation resources: the latest renal labs, body size, IgA, HbA1c, paraprotein and
viscosity, and anti-IgA antibody results (decisions 9-11)."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import criteria, kidney, lab_values, units
from ..memo import Memo
from ..record import PatientRecord
from ..terminology import Terminology, concept_codes, concept_key, concept_text
from ..thresholds import Thresholds
from .fhir import code_of, listify, parse_dt, qty_text, ref_of, value_text
from .model import Factor, FactRef, LabValue
from .patient import now_of
from .validation import Validator

# LOINC -> lab kind
LOINC_KIND = {
    "2160-0": "creatinine", "38483-4": "creatinine", "14682-9": "creatinine", "59826-8": "creatinine",
    "98979-8": "egfr", "98980-6": "egfr", "62238-1": "egfr", "88293-6": "egfr", "88294-4": "egfr",
    "94677-2": "egfr", "50210-4": "egfr", "77147-7": "egfr", "48642-3": "egfr", "48643-1": "egfr",
    "50044-7": "egfr", "70969-1": "egfr", "69405-9": "egfr", "33914-3": "egfr",
    "29463-7": "weight", "3141-9": "weight", "3142-7": "weight_stated",
    "8302-2": "height", "2458-8": "iga", "4548-4": "hba1c", "33358-3": "mspike", "3128-6": "viscosity",
    "39156-5": "bmi", "82810-3": "pregnancy-status",
    # qualitative hCG (pregnancy test) in urine or serum: a positive result is pregnancy (decision 28)
    "2106-3": "pregnancy-test", "2118-8": "pregnancy-test", "80384-1": "pregnancy-test",
    "80385-8": "pregnancy-test", "2116-2": "pregnancy-test",
}
_LAB_UNIT_KIND = {"creatinine": "creatinine", "egfr": "egfr", "weight": "weight", "weight_stated": "weight",
                  "height": "height", "iga": "iga", "hba1c": "hba1c", "mspike": "protein",
                  "viscosity": "viscosity", "bmi": "bmi"}
_LAB_LABEL = {"creatinine": "Serum creatinine", "egfr": "eGFR", "weight": "Body weight",
              "weight_stated": "Body weight (stated)", "height": "Body height", "iga": "Serum IgA",
              "hba1c": "HbA1c", "mspike": "Monoclonal protein (M-spike)", "viscosity": "Serum viscosity",
              "bmi": "Body mass index"}
ANTI_IGA = "anti-iga"  # an anti-IgA antibody result: not a lab value
PREGNANCY_STATUS = "pregnancy-status"  # an answer, not a lab value (decision 28)
PREGNANCY_TEST = "pregnancy-test"  # positive or negative, not a lab value
_ANTI_IGA_RE = re.compile(r"anti-?iga|iga antibod|antibod(y|ies) (to|against) iga|anti-immunoglobulin a",
                          re.IGNORECASE)
_POSITIVE_RE = re.compile(r"positive|detected|present|reactive", re.IGNORECASE)
_NEGATIVE_RE = re.compile(r"negative|not detected|absent|non-?reactive", re.IGNORECASE)
_LOINC_URI = "http://loinc.org"
_OK_STATUS = frozenset({"final", "amended", "corrected", "appended", ""})
_UNDATED = datetime.min.replace(tzinfo=UTC)
_NEWEST = operator.itemgetter(0)
_UNSET = object()

Candidates = list[tuple[datetime, datetime | None, dict[str, Any]]]  # (sort date, date, resource)


@dataclass
class LabsPart:
    egfr: LabValue | None = None
    creatinine: LabValue | None = None
    creatinine_series: list[LabValue] = field(default_factory=list)
    weight: LabValue | None = None
    weight_stated: bool = False
    height: LabValue | None = None
    iga_level: LabValue | None = None
    hba1c: LabValue | None = None
    bmi: LabValue | None = None
    # every usable eGFR (with its method, kidney.RACE_FREE_2021 ...) and creatinine of the lab window (decision 30)
    egfr_results: list[tuple[LabValue, str]] = field(default_factory=list)
    creatinine_results: list[LabValue] = field(default_factory=list)
    pregnancy: list[FactRef] = field(default_factory=list)  # a positive pregnancy status (decision 28)
    hyperviscosity: list[Factor] = field(default_factory=list)
    renal_factors: list[Factor] = field(default_factory=list)
    anti_iga: list[FactRef] = field(default_factory=list)
    unit_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def first_loinc(code: Any) -> str | None:
    """The code of the first coding when that coding is LOINC (the common shape), else None."""
    if type(code) is dict:
        codings = code.get("coding")
        if type(codings) is list and codings:
            cd = codings[0]
            if type(cd) is dict and cd.get("system") == _LOINC_URI and type(cd.get("code")) is str:
                return cd["code"]
    return None


def lab_kind(code: Any, term: Terminology, memo: Memo | None = None) -> str | None:
    """Lab kind of an Observation.code by LOINC, else :data:`ANTI_IGA` for an anti-IgA antibody test,
    else None. ``memo``: the registry's ``observation-kind`` memo (the answer depends on the registry)."""
    if type(code) is not dict:
        return _lab_kind(code, term)
    codings = code.get("coding")  # the common shape first: a first coding that is LOINC of a known kind
    if type(codings) is list and codings:
        cd = codings[0]
        if type(cd) is dict and cd.get("system") == _LOINC_URI and type(cd.get("code")) is str:
            kind = LOINC_KIND.get(cd["code"])
            if kind is not None:
                return kind
    key = concept_key(code)
    if key is None:
        return _lab_kind(code, term)
    if memo is None:
        memo = term.memo("observation-kind")
    kind = memo.get(key, _UNSET)
    if kind is _UNSET:
        kind = memo.remember(key, _lab_kind(code, term))
    return kind  # type: ignore[return-value]


def _lab_kind(code: Any, term: Terminology) -> str | None:
    for c in concept_codes(code, "LOINC"):
        kind = LOINC_KIND.get(c)
        if kind:
            return kind
    t = concept_text(code)
    if t and _ANTI_IGA_RE.search(t) or "lab.anti-iga" in term.match(code).names:
        return ANTI_IGA
    return None


def observation_time(res: dict[str, Any]) -> datetime | None:
    """effective[x] (dateTime, instant, period start), else issued."""
    when = parse_dt(res.get("effectiveDateTime"))
    if when is not None:
        return when
    period = res.get("effectivePeriod")
    return (parse_dt(res.get("effectiveInstant")) or parse_dt(period.get("start") if isinstance(period, dict) else None)
            or parse_dt(res.get("issued")))


def _candidates(record: PatientRecord, term: Terminology) -> tuple[dict[str, Candidates], list[dict[str, Any]]]:
    """Observations by lab kind, newest first (undated last; equal dates in Bundle order, which no choice
    depends on: decision 30 picks among simultaneous results by value); anti-IgA results."""
    by_kind: dict[str, Candidates] = {}
    anti_iga: list[dict[str, Any]] = []
    memo = term.memo("observation-kind")
    for res in record.resources.get("Observation", ()):
        if not isinstance(res, dict):
            continue
        status = res.get("status")
        if (status if type(status) is str else str(status or "")) not in _OK_STATUS:
            continue
        code = res.get("code")
        kind = None
        if type(code) is dict:  # lab_kind's common shape, inline: a first coding that is LOINC of a known kind
            codings = code.get("coding")
            if type(codings) is list and codings:
                cd = codings[0]
                if type(cd) is dict and cd.get("system") == _LOINC_URI and type(c := cd.get("code")) is str:
                    kind = LOINC_KIND.get(c)
        if kind is None:
            kind = lab_kind(code, term, memo)
            if kind is None:
                continue
        if kind == ANTI_IGA:
            anti_iga.append(res)
            continue
        edt = res.get("effectiveDateTime")  # observation_time's common shape, inline
        when = parse_dt(edt) if type(edt) is str else None
        if when is None:
            when = observation_time(res)
        found = by_kind.get(kind)
        if found is None:
            by_kind[kind] = found = []
        found.append((when or _UNDATED, when, res))
    for lst in by_kind.values():
        lst.sort(key=_NEWEST, reverse=True)
    return by_kind, anti_iga


def read_observations(record: PatientRecord, term: Terminology, th: Thresholds) -> LabsPart:
    part = LabsPart()
    v = Validator()
    cands, anti_iga = _candidates(record, term)
    now = now_of(record)
    lab_cut = now - timedelta(days=th.lab_recency_days)
    w_cut = now - timedelta(days=th.weight_recency_days)

    def within(kind: str, cutoff: datetime) -> list[LabValue]:
        out = []
        for _, when, res in cands.get(kind, ()):
            if when is None or when < cutoff:
                break
            lv = _lab(res, when, kind, part, v)
            if lv is not None:
                out.append(lv)
        return out

    def latest(kind: str, cutoff: datetime | None) -> LabValue | None:
        for _, when, res in cands.get(kind, ()):
            if cutoff is not None and (when is None or when < cutoff):
                break
            lv = _lab(res, when, kind, part, v)
            if lv is not None:
                return lv
        return None

    part.egfr = latest("egfr", lab_cut)
    part.creatinine = latest("creatinine", lab_cut)
    part.egfr_results = [(lv, egfr_method(lv.code, term)) for lv in within("egfr", lab_cut)]
    part.creatinine_results = within("creatinine", lab_cut)
    series_cut = now - timedelta(days=max(th.lab_recency_days, th.aki_baseline_window_days + 2))
    for _, when, res in cands.get("creatinine", ()):
        if when is None or when < series_cut:
            break
        lv = _lab(res, when, "creatinine", part, v)
        if lv is not None:
            part.creatinine_series.append(lv)
    part.weight = latest("weight", w_cut)
    if part.weight is None:
        part.weight = latest("weight_stated", w_cut)
        part.weight_stated = part.weight is not None
    part.height = latest("height", None)
    part.iga_level = latest("iga", None)
    part.hba1c = latest("hba1c", None)
    part.bmi = latest("bmi", w_cut)
    pregnancy_cut = now - timedelta(days=th.pregnancy_status_recency_days)
    part.pregnancy = (pregnant_by_status(cands.get(PREGNANCY_STATUS, []), pregnancy_cut, term, v)
                      or pregnant_by_test(cands.get(PREGNANCY_TEST, []), pregnancy_cut, v))
    mspike = latest("mspike", None)
    named = criteria.derived_factors()
    if mspike is not None and mspike.value > 0:
        for name, target in (("mspike_hyperviscosity", part.hyperviscosity), ("mspike_renal", part.renal_factors)):
            target.append(Factor(named[name]["key"], named[name]["label"], mspike.reference, mspike.fact().value))
    for _, when, res in cands.get("viscosity", [])[:1]:
        if v.valid(res) and is_high(res):
            part.hyperviscosity.append(Factor(named["viscosity"]["key"], named["viscosity"]["label"], ref_of(res),
                                              f"{qty_text(res)} on {when.date() if when else '?'}"))
    for res in anti_iga:
        if is_positive(res) and v.valid(res):
            part.anti_iga.append(FactRef("Anti-IgA antibodies", value_text(res), ref_of(res)))
    part.notes, part.skipped = v.notes, v.skipped
    return part


def _lab(res: dict[str, Any], when: datetime | None, kind: str, part: LabsPart, v: Validator) -> LabValue | None:
    """The value in the unit the rules use; a unit that cannot be converted is a unit problem, not a value."""
    q = res.get("valueQuantity")
    if not isinstance(q, dict):
        return None
    conv = units.convert_quantity(q, _LAB_UNIT_KIND[kind])
    ref = ref_of(res)
    if conv.value is None:
        msg = f"{_LAB_LABEL[kind]} {conv.original} ({ref or 'no id'}): {conv.problem}"
        if msg not in part.unit_problems:
            part.unit_problems.append(msg)
        return None
    if not v.valid(res):
        return None
    code = res.get("code")
    first = first_loinc(code)
    if first:
        first = first.strip()
    else:
        codes = concept_codes(code, "LOINC")
        first = codes[0] if codes else ""
    return LabValue(_LAB_LABEL[kind], conv.value, conv.unit, when, ref, conv.original, first,
                    comparator=lab_values.comparator_of(q))


def egfr_method(loinc: str, term: Terminology) -> str:
    """How a reported eGFR was computed, from the value sets of its LOINC code (decision 30)."""
    names = term.match({"coding": [{"system": _LOINC_URI, "code": loinc}]}).names
    if "egfr.race-adjusted" in names:
        return kidney.RACE_ADJUSTED
    if "egfr.ckd-epi-2021" in names:
        return kidney.RACE_FREE_2021
    return kidney.OTHER


def pregnant_by_status(cands: Candidates, cutoff: datetime, term: Terminology, v: Validator) -> list[FactRef]:
    """A positive pregnancy status (LOINC 82810-3): the newest answer of the window decides (decision 28)."""
    for _, when, res in cands:
        if when is None or when < cutoff:
            break
        answer = res.get("valueCodeableConcept")
        if not isinstance(answer, dict):
            continue
        if "pregnancy.positive-answer" in term.match(answer).names and v.valid(res):
            shown = concept_text(answer) or "pregnant"
            return [FactRef("Pregnancy status", f"{shown} on {when.date().isoformat()}", ref_of(res))]
        return []
    return []


def pregnant_by_test(cands: Candidates, cutoff: datetime, v: Validator) -> list[FactRef]:
    """A positive qualitative hCG (pregnancy test): the newest result of the window decides, so a later
    negative test outweighs an earlier positive one."""
    for _, when, res in cands:
        if when is None or when < cutoff:
            break
        if not (res.get("valueCodeableConcept") or res.get("valueString") or res.get("interpretation")):
            continue  # no result recorded
        if is_positive(res) and v.valid(res):
            return [FactRef("Pregnancy test", f"positive hCG on {when.date().isoformat()}", ref_of(res))]
        return []
    return []


def is_high(res: dict[str, Any]) -> bool:
    """Interpretation high/abnormal, or the value above the reference range's high."""
    for i in listify(res.get("interpretation")):
        if code_of(i) in ("h", "hh", "a", "aa", "high"):
            return True
    q = res.get("valueQuantity")
    for rr in listify(res.get("referenceRange")):
        if isinstance(rr, dict) and isinstance(rr.get("high"), dict) and isinstance(q, dict):
            hv, val = rr["high"].get("value"), q.get("value")
            if isinstance(hv, int | float) and isinstance(val, int | float) and val > hv:
                return True
    return False


def is_positive(res: dict[str, Any]) -> bool:
    for i in listify(res.get("interpretation")):
        if code_of(i) in ("pos", "h", "hh", "a", "aa", "det", "positive"):
            return True
    text = ""
    if isinstance(res.get("valueCodeableConcept"), dict):
        text = concept_text(res["valueCodeableConcept"]) or code_of(res["valueCodeableConcept"])
    elif isinstance(res.get("valueString"), str):
        text = res["valueString"]
    if text:
        return bool(_POSITIVE_RE.search(text)) and not _NEGATIVE_RE.search(text)
    return is_high(res)
