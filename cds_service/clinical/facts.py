"""Clinical facts of one request, built once from a :class:`~cds_service.clinical.record.PatientRecord`.

How resources are read (fast path first):

1. Cheap dict checks pick candidates: resourceType, status, and code lookups in the value sets of
   :mod:`cds_service.clinical.terminology` (plain dict/set lookups).
2. Only a resource that is about to become a fact is validated with ``fhir.resources.R4B``, and only on
   the fields the rules read (a projection; required elements the rules do not read, such as
   ``subject``, are stubbed). A resource that fails is skipped and a note goes to ``record.notes``:
   one broken resource never breaks the request.
3. Every fact keeps the FHIR reference (``"Observation/abc"``) it came from.
"""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from . import plausibility, units
from .record import PatientRecord
from .terminology import (
    ANTI_TNF,
    ATC,
    GC,
    IG,
    MEMO_MAX_ENTRIES,
    MEMO_MAX_TEXT,
    RITUXIMAB,
    SECOND_LINE,
    ConceptMatch,
    Terminology,
    concept_codes,
    concept_key,
    concept_label,
    concept_text,
    get_terminology,
    immune_globulin_route,
)
from .thresholds import Thresholds, get_thresholds

# ============================================================================================ small types


@dataclass(frozen=True, slots=True)
class FactRef:
    """One fact as shown on a card: what, its value, and the FHIR resource it came from."""

    fact: str
    value: str
    reference: str | None = None

    def as_dict(self) -> dict[str, str]:
        d = {"fact": self.fact, "value": self.value}
        if self.reference:
            d["reference"] = self.reference
        return d


_SHOW_UNIT = {"mL/min/{1.73_m2}": "mL/min/1.73 m2"}


@dataclass(slots=True)
class LabValue:
    label: str
    value: float  # in ``unit``
    unit: str
    when: datetime | None
    reference: str | None
    original: str  # as recorded, e.g. "106 umol/L"
    code: str = ""
    computed: bool = False

    def fact(self, label: str | None = None) -> FactRef:
        shown = f"{fmt(self.value)} {_SHOW_UNIT.get(self.unit, self.unit)}"
        if self.original and not self.original.endswith(self.unit) and not self.computed:
            shown += f" (recorded {self.original})"
        if self.when:
            shown += f" on {self.when.date().isoformat()}"
        return FactRef(label or self.label, shown, self.reference)


@dataclass(slots=True)
class Factor:
    """A risk factor or contraindication with its source."""

    key: str
    label: str
    reference: str | None
    detail: str = ""
    short: str = ""  # the specific finding for summaries ("Deep venous thrombosis"); default: label

    @property
    def name(self) -> str:
        return self.short or self.label

    def fact(self, prefix: str = "") -> FactRef:
        return FactRef(prefix + self.label, self.detail or "present", self.reference)


@dataclass(slots=True)
class NSCondition:
    kind: str  # ns | neuromuscular | meningitis | cranial | myelopathy | neuropathy | sfn | possible ...
    label: str
    reference: str | None
    clinical_status: str  # active | recurrence | relapse | inactive | remission | resolved
    verification: str  # confirmed | suspected
    onset: datetime | None
    recorded: datetime | None

    @property
    def active(self) -> bool:
        return self.clinical_status in ("active", "recurrence", "relapse")

    @property
    def date(self) -> datetime | None:
        return self.onset or self.recorded

    @property
    def relapse_date(self) -> datetime | None:
        dates = [d for d in (self.onset, self.recorded) if d]
        return max(dates) if dates else None

    def fact(self) -> FactRef:
        when = self.date.date().isoformat() if self.date else "date unknown"
        return FactRef("Neurological condition", f"{self.label} ({self.clinical_status}, {when})", self.reference)


@dataclass(slots=True)
class Exposure:
    """One medication record (statement, request, administration, dispense) of a tracked drug."""

    reference: str | None
    resource_type: str
    label: str
    ingredient: str | None
    drug_class: str | None
    status: str  # current | past | planned | unknown
    raw_status: str
    start: datetime | None
    end: datetime | None
    route: str | None = None  # oral | iv | im | sc | topical | inhaled | ... | None
    dose_mg: float | None = None  # per administration
    per_day: float | None = None  # administrations per day
    daily_mg: float | None = None
    pred_eq_mg: float | None = None  # GC: prednisone-equivalent mg/day
    weekly_mg: float | None = None  # methotrexate
    daily_frequency: bool = False  # methotrexate recorded daily (A9)
    pulse: bool = False
    stop_reason: str | None = None  # intolerance | ineffective | other
    stop_text: str = ""
    reason_sarcoid: bool | None = None  # reasonCode/reasonReference points to sarcoidosis (A3)
    reason_replacement: bool = False  # adrenal insufficiency / hypopituitarism (A4)
    administrations: int = 0
    ig_kind: str | None = None  # ivig | scig
    groups: frozenset[str] = frozenset()

    @property
    def current(self) -> bool:
        return self.status == "current"

    @property
    def exposed(self) -> bool:
        return self.status in ("current", "past", "unknown")

    def fact(self) -> FactRef:
        parts = [self.raw_status or self.status]
        if self.pred_eq_mg is not None and self.drug_class == GC:
            parts.append(f"{fmt(self.pred_eq_mg)} mg/day prednisone-equivalent")
        elif self.weekly_mg is not None:
            parts.append(f"{fmt(self.weekly_mg)} mg/week")
        if self.start:
            parts.append(f"from {self.start.date().isoformat()}")
        if self.end and self.status != "current":
            parts.append(f"to {self.end.date().isoformat()}")
        if self.stop_reason:
            parts.append(f"stopped: {self.stop_reason}" + (f" ({self.stop_text})" if self.stop_text else ""))
        return FactRef(self.label, ", ".join(parts), self.reference)


@dataclass(slots=True)
class OrderedDose:
    """What an immune globulin order asks for (read from dosageInstruction)."""

    per_admin_g: float | None = None
    per_admin_g_per_kg: float | None = None
    admins_per_day: float | None = None
    days: float | None = None
    text: str = ""
    problems: list[str] = field(default_factory=list)
    segments: list[tuple[float | None, float | None, float | None, float | None]] = field(default_factory=list)


@dataclass(slots=True)
class PlannedOrder:
    reference: str
    resource_type: str
    label: str
    ingredient: str | None
    drug_class: str | None
    tier: int | None
    selected: bool
    route: str | None
    ig_kind: str | None = None  # ivig | scig
    ig_route_assumed: bool = False
    dose: OrderedDose | None = None
    pred_eq_mg: float | None = None
    pulse: bool = False
    weekly_mg: float | None = None
    daily_frequency: bool = False

    @property
    def is_ladder(self) -> bool:
        return self.drug_class in (GC, SECOND_LINE, ANTI_TNF, RITUXIMAB) and (
            self.drug_class != GC or self.route not in _NON_SYSTEMIC
        )

    @property
    def is_ig(self) -> bool:
        return self.drug_class == IG

    def fact(self) -> FactRef:
        return FactRef("Order", self.label, self.reference)


@dataclass
class Facts:
    patient_id: str
    now: datetime
    patient_ref: str
    age: int | None = None
    sex: str | None = None  # male | female | None
    # --- neurosarcoidosis (B1, A15, A16)
    ns_status: str = "none"  # active | suspected | possible | history | none
    ns_in_remission: bool = False
    ns_conditions: list[NSCondition] = field(default_factory=list)
    possible_ns: list[NSCondition] = field(default_factory=list)  # unlinked neuro diagnoses with sarcoidosis
    sarcoidosis: list[FactRef] = field(default_factory=list)
    ns_onset: datetime | None = None
    sfn: list[NSCondition] = field(default_factory=list)
    conduction_block: list[NSCondition] = field(default_factory=list)
    bulbar: list[NSCondition] = field(default_factory=list)
    relapses: list[NSCondition] = field(default_factory=list)
    inpatient_for_ns: list[FactRef] = field(default_factory=list)
    # --- drugs
    exposures: dict[str, list[Exposure]] = field(default_factory=dict)  # drug class -> exposures
    risk_drugs: list[Exposure] = field(default_factory=list)  # estrogen / nephrotoxic
    gc_intolerance: list[NSCondition] = field(default_factory=list)  # adverse-effect conditions (dated)
    is_intolerance: list[NSCondition] = field(default_factory=list)
    drug_allergies: dict[str, list[FactRef]] = field(default_factory=dict)  # ingredient -> allergy refs
    # --- renal
    egfr: LabValue | None = None
    creatinine: LabValue | None = None
    creatinine_series: list[LabValue] = field(default_factory=list)
    aki: list[FactRef] = field(default_factory=list)
    renal_factors: list[Factor] = field(default_factory=list)
    renal_critical: list[Factor] = field(default_factory=list)
    # --- body size
    weight: LabValue | None = None
    weight_stated: bool = False
    height: LabValue | None = None
    bmi: float | None = None
    ibw: float | None = None
    adjusted_weight: float | None = None
    dosing_weight: float | None = None
    dosing_weight_basis: str = ""  # actual | adjusted
    # --- IVIG safety
    thrombosis_factors: list[Factor] = field(default_factory=list)
    hyperviscosity: list[Factor] = field(default_factory=list)
    iga_deficiency: list[FactRef] = field(default_factory=list)
    iga_level: LabValue | None = None
    anti_iga: list[FactRef] = field(default_factory=list)
    prior_ig_reaction: list[FactRef] = field(default_factory=list)
    prior_ig_reaction_severe: bool = False
    heart_failure: list[Factor] = field(default_factory=list)
    contraindications: list[Factor] = field(default_factory=list)  # to standard immunosuppression
    pregnancy: list[FactRef] = field(default_factory=list)
    # --- orders
    planned_orders: list[PlannedOrder] = field(default_factory=list)
    # --- data quality
    unit_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # convenience -------------------------------------------------------------------------------
    def of_class(self, drug_class: str) -> list[Exposure]:
        return self.exposures.get(drug_class, [])

    @property
    def has_sarcoidosis(self) -> bool:
        return bool(self.sarcoidosis)

    @property
    def ns_in_scope(self) -> bool:
        return self.ns_status in ("active", "suspected", "possible")

    @property
    def the_orders(self) -> list[PlannedOrder]:
        """The order(s) the hook is about: the selections (order-select), else every draft."""
        sel = [o for o in self.planned_orders if o.selected]
        return sel or self.planned_orders

    @property
    def ig_orders(self) -> list[PlannedOrder]:
        return [o for o in self.the_orders if o.is_ig]

    @property
    def thrombosis_high_risk(self) -> bool:
        return any(f.key in ("history", "hypercoagulable") for f in self.thrombosis_factors)

    @property
    def thrombosis_factor_count(self) -> int:
        return len({f.key for f in self.thrombosis_factors})

    def current_ig(self) -> list[Exposure]:
        return [e for e in self.of_class(IG) if e.current]


# ============================================================================================ helpers

_NON_SYSTEMIC = ("topical", "inhaled", "nasal", "ophthalmic", "otic", "intra-articular", "rectal", "dental",
                 "intralesional", "transdermal-local")


def fmt(x: float | None, digits: int = 1) -> str:
    """Numbers as cards show them: no trailing zeros, thousands separator.

    Memoised by (value, type, digits): the rules and cards format the same thresholds and doses dozens of
    times per request."""
    try:
        return _fmt_memo(x, digits)
    except TypeError:  # unhashable: not a number anyway; let _fmt raise what it raises
        return _fmt(x, digits)


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "?"
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    s = f"{x:,.{digits}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


_fmt_memo = functools.lru_cache(maxsize=1024, typed=True)(_fmt)  # typed: 1, 1.0 and True kept apart


def parse_dt(value: Any) -> datetime | None:
    """FHIR date/dateTime/instant (incl. partial dates) -> aware datetime (UTC when no zone).

    Memoised by the exact string (datetimes are immutable): every Observation's date is parsed to rank
    the candidates, and the same timestamps come back in the next request's prefetch.
    """
    if type(value) is str and len(value) <= 64:
        return _parse_dt_memo(value)
    return _parse_dt(value)


@functools.lru_cache(maxsize=4096)
def _parse_dt_memo(value: str) -> datetime | None:
    return _parse_dt(value)


def _parse_dt(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    v = value.strip()
    try:
        if len(v) == 4:
            return datetime(int(v), 1, 1, tzinfo=UTC)
        if len(v) == 7:
            return datetime(int(v[:4]), int(v[5:7]), 1, tzinfo=UTC)
        if len(v) == 10:
            return datetime(int(v[:4]), int(v[5:7]), int(v[8:10]), tzinfo=UTC)
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        return None


def _code_of(concept: Any) -> str:
    """First coding code (lower case) or text of a status-like CodeableConcept/code."""
    if isinstance(concept, str):
        return concept.lower()
    if isinstance(concept, dict):
        for cd in concept.get("coding") or ():
            if isinstance(cd, dict) and isinstance(cd.get("code"), str):
                return cd["code"].lower()
        if isinstance(concept.get("text"), str):
            return concept["text"].lower()
    return ""


def _listify(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def label_of(concept: Any, m: ConceptMatch) -> str:
    """Concept text/display; a bare code gets the display terminology.json gives it."""
    lab = concept_label(concept)
    if not m.hits:
        return lab
    bare = lab.replace(".", "").upper()
    for h in m.hits:
        if h.via in ("code", "prefix", "atc") and h.code.replace(".", "") == bare \
                and h.display and h.display != lab:
            return f"{h.display} ({lab})"
        if h.via == "code" and h.code == lab and h.display:
            return f"{h.display} ({lab})"
    return lab


def ref_of(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid and rtype else None


_ROUTE_SCT = {
    "26643006": "oral", "47625008": "iv", "78421000": "im", "34206005": "sc", "6064005": "topical",
    "18679011000001101": "inhaled", "447694001": "inhaled", "46713006": "nasal", "54485002": "ophthalmic",
    "10547007": "otic", "12130007": "intra-articular", "37161004": "rectal", "45890007": "transdermal",
    "37839007": "sublingual", "372449004": "dental", "372464004": "intradermal", "58100008": "intra-arterial",
}
_ROUTE_WORDS = (
    ("iv", re.compile(r"intravenous|\biv\b|\bi\.v\.|infusion")),
    ("sc", re.compile(r"subcutaneous|\bsc\b|\bs\.c\.|\bsubq\b|\bsq\b")),
    ("im", re.compile(r"intramuscular|\bim\b")),
    ("inhaled", re.compile(r"inhal|nebuli|respiratory \(inhalation\)|metered dose|\bmdi\b")),
    ("nasal", re.compile(r"nasal")),
    ("ophthalmic", re.compile(r"ophthalmic|\beye\b|intravitreal")),
    ("otic", re.compile(r"\botic\b|\bear\b")),
    ("topical", re.compile(r"topical|cream|ointment|lotion|\bgel\b|cutaneous|shampoo|foam")),
    ("intra-articular", re.compile(r"intra-?articular")),
    ("rectal", re.compile(r"rectal|enema|suppositor")),
    ("transdermal", re.compile(r"transdermal|\bpatch\b")),
    ("oral", re.compile(r"\boral|tablet|capsule|\bpo\b|by mouth|elixir|solution, oral")),
    ("iv", re.compile(r"injection|injectable|for injection")),
)


_ROUTE_MEMO: dict[tuple[bytes | None, str], str | None] = {}


def route_kind(route_concept: Any, fallback_text: str = "") -> str | None:
    """Classify a route CodeableConcept (and, failing that, the product text).

    Memoised by (the concept's JSON content, the text): up to 24 regex scans otherwise, per dosage."""
    if type(fallback_text) is not str or len(fallback_text) > MEMO_MAX_TEXT:
        return _route_kind(route_concept, fallback_text)
    if isinstance(route_concept, dict):
        ckey = concept_key(route_concept)
        if ckey is None:
            return _route_kind(route_concept, fallback_text)
    else:
        ckey = None  # not an object: only the text counts
    key = (ckey, fallback_text)
    try:
        return _ROUTE_MEMO[key]
    except KeyError:
        pass
    kind = _route_kind(route_concept, fallback_text)
    if len(_ROUTE_MEMO) >= MEMO_MAX_ENTRIES:
        _ROUTE_MEMO.clear()
    _ROUTE_MEMO[key] = kind
    return kind


def _route_kind(route_concept: Any, fallback_text: str = "") -> str | None:
    if isinstance(route_concept, dict):
        for cd in route_concept.get("coding") or ():
            if isinstance(cd, dict):
                k = _ROUTE_SCT.get(str(cd.get("code") or ""))
                if k:
                    return k
        text = concept_text(route_concept).lower()
        for kind, rx in _ROUTE_WORDS:
            if text and rx.search(text):
                return kind
    if fallback_text:
        t = fallback_text.lower()
        for kind, rx in _ROUTE_WORDS:
            if rx.search(t):
                return kind
    return None


_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
_TIMING_CODES = {"qd": 1, "bid": 2, "tid": 3, "qid": 4, "qod": 0.5, "wk": 1 / 7, "am": 1, "pm": 1, "q4h": 6,
                 "q6h": 4, "q8h": 3, "q12h": 2, "q24h": 1}
_TEXT_FREQ = (
    (re.compile(r"once (a|per|every) week|weekly|every week|/week|per week|q ?week|q ?wk|qweek|1x/wk"), 1 / 7),
    (re.compile(r"twice (a|per) day|twice daily|\bbid\b|2 times (a|per) day"), 2),
    (re.compile(r"three times|\btid\b"), 3),
    (re.compile(r"every other day|alternate day|\bqod\b"), 0.5),
    (re.compile(r"once (a|per) day|once daily|\bdaily\b|every day|every morning|\bqd\b|\bqam\b|/day|per day"), 1),
)


def per_day_of(dosage: dict[str, Any]) -> float | None:
    timing = dosage.get("timing")
    if isinstance(timing, dict):
        rep = timing.get("repeat")
        if isinstance(rep, dict):
            freq = rep.get("frequencyMax") or rep.get("frequency")
            period = rep.get("period")
            unit = rep.get("periodUnit")
            if isinstance(period, int | float) and period > 0 and unit in _PERIOD_DAYS:
                f = freq if isinstance(freq, int | float) and freq > 0 else 1
                return f / (period * _PERIOD_DAYS[unit])
            if isinstance(freq, int | float) and freq > 0 and unit is None and period is None:
                return None
        code = _code_of(timing.get("code"))
        if code in _TIMING_CODES:
            return _TIMING_CODES[code]
    text = " ".join(
        str(x) for x in (dosage.get("text"), dosage.get("patientInstruction"), concept_text(dosage.get("timing", {}).get("code") if isinstance(dosage.get("timing"), dict) else None)) if x  # noqa: E501
    ).lower()
    if text:
        for rx, val in _TEXT_FREQ:
            if rx.search(text):
                return val
    return None


_STRENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b(?!\s*/\s*m?l)", re.IGNORECASE)
_TABLET_UNITS = {"{tbl}", "{tablet}", "{tablets}", "tab", "tabs", "tablet", "tablets", "{capsule}", "capsule",
                 "{cap}", "1", "{each}", "ea"}


def dose_mg_of(dosage: dict[str, Any], product_text: str) -> float | None:
    """mg per administration from doseAndRate.doseQuantity (mg, g, or tablets x strength)."""
    for dar in _listify(dosage.get("doseAndRate")):
        if not isinstance(dar, dict):
            continue
        q = dar.get("doseQuantity")
        if not isinstance(q, dict):
            rng = dar.get("doseRange")
            q = rng.get("high") if isinstance(rng, dict) else None
        if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
            continue
        unit = str(q.get("code") or q.get("unit") or "").strip()
        f = units.factor("mass_dose", unit)
        if f is not None:
            return float(q["value"]) * f
        if unit.lower() in _TABLET_UNITS:
            strengths = {float(m) for m in _STRENGTH_RE.findall(product_text or "")}
            if len(strengths) == 1:
                return float(q["value"]) * strengths.pop()
    # MedicationAdministration.dosage.dose
    q = dosage.get("dose")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float):
        f = units.factor("mass_dose", str(q.get("code") or q.get("unit") or ""))
        if f is not None:
            return float(q["value"]) * f
    return None


_INEFFECTIVE_RE = re.compile(
    r"treatment failure|therapy failure|failed (therapy|treatment)|no response|non-?respon|ineffective|"
    r"not effective|lack of (efficacy|effect|response)|progression|progressive disease|relapse|refractory|"
    r"worsen|not working|no improvement|inadequate response", re.IGNORECASE)
_INTOLERANCE_RE = re.compile(
    r"adverse|side.?effect|toxic|allerg|intoleran|hyperglyc|diabet|psychos|fracture|osteopor|cytopeni|"
    r"neutropeni|leukopeni|thrombocytopeni|hepatotox|transaminase|liver|hepatitis|pneumonitis|infusion reaction|"
    r"reaction|cushing|weight gain|insomnia|mood|infection|rash|nausea|not tolerated", re.IGNORECASE)


def classify_stop_reason(texts: list[str]) -> str | None:
    """B3: intolerance / ineffective / other, from statusReason text or display."""
    text = " | ".join(t for t in texts if t)
    if not text:
        return None
    if _INEFFECTIVE_RE.search(text):
        return "ineffective"
    if _INTOLERANCE_RE.search(text):
        return "intolerance"
    return "other"


_SFN_EVIDENCE_RE = re.compile(r"small[- ]?fib(er|re)|\bsfn\b|ienfd|intra-?epidermal nerve|skin biops",
                              re.IGNORECASE)
_NEURO_SITE_RE = re.compile(r"brain|cerebr|spinal|mening|cranial|nerve|neur|optic|pituitar|hypothalam|"
                            r"nervous|myel|leptomening", re.IGNORECASE)
_CATHETER_RE = re.compile(r"central venous|\bcvc\b|\bpicc\b|peripherally inserted central|implant(ed|able) "
                          r"(venous )?port|port-?a-?cath|portacath|dialysis catheter|hickman|tunnel+ed catheter|"
                          r"central line|vascular access", re.IGNORECASE)
_ANTI_IGA_RE = re.compile(r"anti-?iga|iga antibod|antibod(y|ies) (to|against) iga|anti-immunoglobulin a",
                          re.IGNORECASE)
_POSITIVE_RE = re.compile(r"positive|detected|present|reactive", re.IGNORECASE)
_NEGATIVE_RE = re.compile(r"negative|not detected|absent|non-?reactive", re.IGNORECASE)
_ANAPHYLAXIS_RE = re.compile(r"anaphyla|angioedema|shock|severe", re.IGNORECASE)

# LOINC -> lab kind
_LOINC_KIND = {
    "2160-0": "creatinine", "38483-4": "creatinine",
    "98979-8": "egfr", "98980-6": "egfr", "62238-1": "egfr", "88293-6": "egfr", "88294-4": "egfr",
    "94677-2": "egfr", "50210-4": "egfr", "77147-7": "egfr", "48642-3": "egfr", "48643-1": "egfr",
    "50044-7": "egfr", "70969-1": "egfr", "69405-9": "egfr", "33914-3": "egfr",
    "29463-7": "weight", "3141-9": "weight", "3142-7": "weight_stated",
    "8302-2": "height", "2458-8": "iga", "4548-4": "hba1c", "33358-3": "mspike", "3128-6": "viscosity",
}
_LAB_UNIT_KIND = {"creatinine": "creatinine", "egfr": "egfr", "weight": "weight", "weight_stated": "weight",
                  "height": "height", "iga": "iga", "hba1c": "hba1c", "mspike": "protein",
                  "viscosity": "viscosity"}
_LAB_LABEL = {"creatinine": "Serum creatinine", "egfr": "eGFR", "weight": "Body weight",
              "weight_stated": "Body weight (stated)", "height": "Body height", "iga": "Serum IgA",
              "hba1c": "HbA1c", "mspike": "Monoclonal protein (M-spike)", "viscosity": "Serum viscosity"}
_STATEMENT_STATUS = {"active": "current", "on-hold": "current", "completed": "past", "stopped": "past",
                     "intended": "planned", "unknown": "unknown"}
_REQUEST_STATUS = {"active": "current", "on-hold": "current", "completed": "past", "stopped": "past",
                   "draft": "planned", "unknown": "unknown"}
_RISK_DRUG_GROUPS = frozenset({"estrogen-thrombosis-risk", "nephrotoxic-drug"})
_LOINC_URI = "http://loinc.org"
_DT_MIN = datetime.min.replace(tzinfo=UTC)
_FIRST = operator.itemgetter(0)
_ANTI_IGA = "anti-iga"  # _observation_kind: not a lab value, an anti-IgA antibody result
_UNSET = object()
_OBS_OK_STATUS = {"final", "amended", "corrected", "appended", ""}

# fields validated per resource type (what the rules read) and stubs for required fields they do not read
_PROJECTION = {
    "Condition": ("clinicalStatus", "verificationStatus", "code", "bodySite", "onsetDateTime", "onsetPeriod",
                  "recordedDate", "abatementDateTime", "abatementPeriod", "evidence", "note"),
    "Observation": ("status", "code", "valueQuantity", "valueCodeableConcept", "valueString", "interpretation",
                    "referenceRange", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "MedicationStatement": ("status", "statusReason", "medicationCodeableConcept", "effectiveDateTime",
                            "effectivePeriod", "dosage", "reasonCode"),
    "MedicationRequest": ("status", "intent", "statusReason", "medicationCodeableConcept", "authoredOn",
                          "dosageInstruction", "dispenseRequest", "reasonCode"),
    "MedicationAdministration": ("status", "statusReason", "medicationCodeableConcept", "effectiveDateTime",
                                 "effectivePeriod", "dosage"),
    "MedicationDispense": ("status", "medicationCodeableConcept", "whenHandedOver", "daysSupply",
                           "dosageInstruction"),
    "AllergyIntolerance": ("clinicalStatus", "verificationStatus", "code", "criticality", "reaction",
                           "onsetDateTime", "recordedDate"),
    "Device": ("status", "type"),
    "Encounter": ("status", "class", "period", "reasonCode"),
    "Patient": ("birthDate", "gender"),
    "ServiceRequest": ("status", "intent", "code"),
}
_STUBS: dict[str, dict[str, Any]] = {
    "Condition": {"subject": {"reference": "Patient/x"}},
    "Observation": {"status": "unknown"},
    "MedicationStatement": {"subject": {"reference": "Patient/x"}, "status": "unknown"},
    "MedicationRequest": {"subject": {"reference": "Patient/x"}, "status": "unknown", "intent": "order"},
    "MedicationAdministration": {"subject": {"reference": "Patient/x"}, "status": "unknown",
                                 "effectiveDateTime": "1900-01-01"},
    "MedicationDispense": {"status": "unknown"},
    "AllergyIntolerance": {"patient": {"reference": "Patient/x"}},
    "Encounter": {"status": "unknown", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                  "code": "AMB"}},
    "ServiceRequest": {"subject": {"reference": "Patient/x"}, "status": "unknown", "intent": "order"},
}
_MEDICATION_X = ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense")


# ============================================================================================ validation
def clear_caches() -> None:
    """Empty this module's memos (dates, number formats, routes, validation outcomes): cold-cache benchmarks."""
    _parse_dt_memo.cache_clear()
    _fmt_memo.cache_clear()
    _ROUTE_MEMO.clear()
    global _validation_cache_bytes
    _VALIDATION_CACHE.clear()
    _validation_cache_bytes = 0


_VALIDATION_CACHE: dict[bytes, str | None] = {}
_VALIDATION_CACHE_MAX = 50_000
# Bytes of keys held: hostile resources with megabyte notes must not turn 50,000 entries into gigabytes.
_VALIDATION_CACHE_MAX_BYTES = 64 * 1024 * 1024
_VALIDATION_CACHE_MAX_KEY = 64 * 1024  # a larger projection is validated every time, not remembered
_validation_cache_bytes = 0
_KEY_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def validate_projection(rtype: str, proj: dict[str, Any]) -> str | None:
    """Validate the projection with ``fhir.resources.R4B``; None when valid, else the first problem.

    Outcomes are cached by the exact JSON content (orjson): the same resource version sent again (prefetch
    of the next hook call) is not validated twice (a hit costs ~1 µs, a validation 90-200 µs). Keys are not
    sorted: the projection's own keys come in a fixed order, and a resource re-sent with its nested keys
    reordered is merely validated again. Values that are not plain JSON (datetime, subclasses) get no key.
    The cache is bounded in entries and in bytes. (:meth:`_Builder.valid` keys by the resource itself,
    which spares building the projection on a hit.)
    """
    try:
        key = rtype.encode() + orjson.dumps(proj, option=_KEY_OPTIONS)
    except TypeError:
        key = None
    if key is not None:
        hit = _VALIDATION_CACHE.get(key, _UNSET)
        if hit is not _UNSET:
            return hit  # type: ignore[return-value]
    problem = _validate(rtype, proj)
    if key is not None:
        _remember_validation(key, problem)
    return problem


def _validate(rtype: str, proj: dict[str, Any]) -> str | None:
    try:
        from fhir.resources.R4B import get_fhir_model_class

        get_fhir_model_class(rtype).model_validate(proj)
    except Exception as exc:  # noqa: BLE001 - any validation problem skips this resource only
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return (" ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(exc).__name__))[:200]
    return None


def _remember_validation(key: bytes, problem: str | None) -> None:
    global _validation_cache_bytes
    if len(key) > _VALIDATION_CACHE_MAX_KEY:
        return
    if len(_VALIDATION_CACHE) >= _VALIDATION_CACHE_MAX or \
            _validation_cache_bytes + len(key) > _VALIDATION_CACHE_MAX_BYTES:
        _VALIDATION_CACHE.clear()
        _validation_cache_bytes = 0
    _VALIDATION_CACHE[key] = problem
    _validation_cache_bytes += len(key)


def _resource_key(res: dict[str, Any], rtype: str, concept: Any) -> bytes | None:
    """Validation-cache key of a resource: its JSON content, plus the medication concept when the projection
    takes it from outside the resource. The projection is a function of exactly these (and constants), so
    equal keys mean equal outcomes. Starts with ``{`` or ``[``, so it never equals a projection key."""
    try:
        if rtype in _MEDICATION_X and "medicationCodeableConcept" not in res and isinstance(concept, dict):
            return orjson.dumps([res, concept], option=_KEY_OPTIONS)
        return orjson.dumps(res, option=_KEY_OPTIONS)
    except TypeError:
        return None


# ============================================================================================ builder


class _Builder:
    def __init__(self, record: PatientRecord, th: Thresholds, term: Terminology) -> None:
        self.record = record
        self.th = th
        self.term = term
        self.now = record.now if record.now.tzinfo else record.now.replace(tzinfo=UTC)
        pid = record.patient_id or (record.patient or {}).get("id") or "unknown"
        if pid.startswith("Patient/"):
            pid = pid[len("Patient/"):]
        self.f = Facts(patient_id=pid, now=self.now, patient_ref=f"Patient/{pid}")
        self._valid: dict[int, bool] = {}
        self._medications: dict[str, dict[str, Any]] | None = None
        self._cond_by_ref: dict[str, ConceptMatch] = {}
        self._ns_refs: set[str] = set()

    # ------------------------------------------------------------------ validation
    def valid(self, res: dict[str, Any], concept: Any = None) -> bool:
        key = id(res)
        cached = self._valid.get(key)
        if cached is not None:
            return cached
        rtype = res.get("resourceType")
        fields = _PROJECTION.get(rtype)  # type: ignore[arg-type]
        ok = True
        if fields is not None:
            # Key by the resource itself (no projection to build on a hit), unless it carries much the rules
            # never read (a Patient's names and addresses, a narrative): then the projection is the cheaper key.
            if len(res) > len(fields) + 6 or "text" in res:
                return self._valid_by_projection(res, rtype, fields, concept, key)  # type: ignore[arg-type]
            rkey = _resource_key(res, rtype, concept)  # type: ignore[arg-type]
            problem = _VALIDATION_CACHE.get(rkey, _UNSET) if rkey is not None else _UNSET
            if problem is _UNSET:
                problem = self._validate_now(res, rtype, fields, concept)  # type: ignore[arg-type]
                if rkey is not None:
                    _remember_validation(rkey, problem)
            if problem is not None:
                ok = False
                note = f"skipped {ref_of(res) or rtype}: invalid FHIR ({problem})"
                self.record.notes.append(note)
                self.f.notes.append(note)
        self._valid[key] = ok
        return ok

    def _valid_by_projection(self, res: dict[str, Any], rtype: str, fields: tuple[str, ...], concept: Any,
                             key: int) -> bool:
        problem = self._validate_now(res, rtype, fields, concept)
        ok = problem is None
        if not ok:
            note = f"skipped {ref_of(res) or rtype}: invalid FHIR ({problem})"
            self.record.notes.append(note)
            self.f.notes.append(note)
        self._valid[key] = ok
        return ok

    @staticmethod
    def _validate_now(res: dict[str, Any], rtype: str, fields: tuple[str, ...], concept: Any) -> str | None:
        """Build the projection (what the rules read; stubs for required fields they do not) and validate it."""
        proj: dict[str, Any] = {"resourceType": rtype}
        if isinstance(res.get("id"), str):
            proj["id"] = res["id"]
        for k in fields:
            if k in res:
                proj[k] = res[k]
        for k, v in _STUBS.get(rtype, {}).items():  # type: ignore[arg-type]
            if k == "effectiveDateTime" and ("effectivePeriod" in proj or "effectiveDateTime" in proj):
                continue
            proj.setdefault(k, v)
        if rtype in _MEDICATION_X and "medicationCodeableConcept" not in proj:
            proj["medicationCodeableConcept"] = concept if isinstance(concept, dict) else {"text": "?"}
        return validate_projection(rtype, proj)

    # ------------------------------------------------------------------ entry
    def build(self) -> Facts:
        self._patient()
        self._conditions()
        self._observations()
        self._medications_all()
        self._allergies()
        self._devices()
        self._encounters()
        self._planned()
        self._derive()
        return self.f

    # ------------------------------------------------------------------ patient
    def _patient(self) -> None:
        p = self.record.patient
        if not isinstance(p, dict):
            self.f.notes.append("no Patient resource: age and sex unknown")
            return
        if not self.valid(p):
            return
        bd = parse_dt(p.get("birthDate"))
        if bd:
            today = self.now.date()
            b = bd.date()
            self.f.age = today.year - b.year - ((today.month, today.day) < (b.month, b.day))
        g = p.get("gender")
        if g in ("male", "female"):
            self.f.sex = g

    # ------------------------------------------------------------------ conditions
    def _conditions(self) -> None:
        f = self.f
        ns_raw: list[tuple[str, dict[str, Any], ConceptMatch, str, str]] = []
        neuro_other: list[tuple[dict[str, Any], ConceptMatch, str, str]] = []
        sarcoid_any = False
        for res in self.record.of_type("Condition"):
            if not isinstance(res, dict):
                continue
            m = self.term.match(res.get("code"))
            if not m.names:
                continue
            ver = _code_of(res.get("verificationStatus"))
            if ver in ("refuted", "entered-in-error"):
                continue
            clin = _code_of(res.get("clinicalStatus"))
            if not clin:
                clin = "resolved" if (res.get("abatementDateTime") or res.get("abatementPeriod")) else "active"
            if not self.valid(res):
                continue
            ref = ref_of(res)
            if ref:
                self._cond_by_ref[ref] = m
            verification = "suspected" if ver in ("provisional", "differential", "unconfirmed") else "confirmed"
            active = clin in ("active", "recurrence", "relapse")
            names = m.names
            label = label_of(res.get("code"), m)
            if "sarcoidosis" in names and active:
                sarcoid_any = True
                f.sarcoidosis.append(FactRef("Sarcoidosis", f"{label} ({clin})", ref))
            # neurosarcoidosis candidates
            kind = None
            if "ns.specific" in names or "ns.neuromuscular" in names:
                kind = ("meningitis" if "ns.meningitis" in names else "cranial" if "ns.cranial" in names
                        else "neuromuscular" if "ns.neuromuscular" in names else "ns")
            elif "neuro.sfn" in names or ("neuro.sfn-proxy" in names and self._sfn_evidence(res, m)):
                kind = "sfn"
            elif "ns.manifestation" in names:
                kind = ("myelopathy" if "ns.myelopathy" in names else
                        "cranial" if "ns.cranial" in names else "neuropathy" if "G63" in _icd_codes(res) else
                        "manifestation")
            elif "sarcoidosis" in names and (self._neuro_site(res) or _NEURO_SITE_RE.search(m.text or "")):
                kind = "ns"
            if kind is not None:
                ns_raw.append((kind, res, m, clin, verification))
            elif ("neuro.other" in names or "neuro.conduction-block" in names or "neuro.sfn-proxy" in names
                  or ("neuro.bulbar" in names and "neuro.bulbar-exclusion" not in names)):
                neuro_other.append((res, m, clin, verification))
            if "neuro.conduction-block" in names:
                neuro_other_cb = self._ns_cond("conduction-block", res, clin, verification, m)
                f.conduction_block.append(neuro_other_cb)
            if "neuro.bulbar" in names and "neuro.bulbar-exclusion" not in names:
                f.bulbar.append(self._ns_cond("bulbar", res, clin, verification, m))
            self._risk_condition(res, m, clin, active, ref, label)
        # B1: manifestation codes only count next to a sarcoidosis code
        for kind, res, m, clin, verification in ns_raw:
            needs_sarcoid = kind in ("sfn", "manifestation", "neuropathy", "myelopathy") or (
                kind == "cranial" and "ns.specific" not in m.names)
            if needs_sarcoid and not sarcoid_any:
                if kind == "sfn":
                    continue  # idiopathic SFN is not an indication (knowledge §2.2)
                continue
            c = self._ns_cond(kind, res, clin, verification, m)
            f.ns_conditions.append(c)
            if c.reference:
                self._ns_refs.add(c.reference)
            if kind == "sfn":
                f.sfn.append(c)
            if clin in ("recurrence", "relapse"):
                f.relapses.append(c)
        if sarcoid_any:
            for res, m2, clin, verification in neuro_other:
                c = self._ns_cond("possible", res, clin, verification, m2)
                if c.active:
                    f.possible_ns.append(c)
        f.bulbar = [b for b in f.bulbar if sarcoid_any]
        f.conduction_block = [c for c in f.conduction_block if sarcoid_any]
        # status (B1, A15: any active non-refuted record wins)
        active = [c for c in f.ns_conditions if c.active]
        if any(c.verification == "confirmed" for c in active):
            f.ns_status = "active"
        elif active:
            f.ns_status = "suspected"
        elif f.possible_ns:
            f.ns_status = "possible"
        elif f.ns_conditions:
            f.ns_status = "history"
            f.ns_in_remission = any(c.clinical_status == "remission" for c in f.ns_conditions)
        dates = [c.date for c in f.ns_conditions if c.date]
        f.ns_onset = min(dates) if dates else None

    def _ns_cond(self, kind: str, res: dict[str, Any], clin: str, verification: str,
                 m: ConceptMatch | None = None) -> NSCondition:
        code = res.get("code")
        return NSCondition(kind, label_of(code, m or self.term.match(code)), ref_of(res), clin, verification,
                           parse_dt(res.get("onsetDateTime")) or parse_dt((res.get("onsetPeriod") or {}).get(
                               "start") if isinstance(res.get("onsetPeriod"), dict) else None),
                           parse_dt(res.get("recordedDate")))

    @staticmethod
    def _neuro_site(res: dict[str, Any]) -> bool:
        for site in _listify(res.get("bodySite")):
            if isinstance(site, dict) and _NEURO_SITE_RE.search(concept_text(site)):
                return True
        return False

    @staticmethod
    def _sfn_evidence(res: dict[str, Any], m: ConceptMatch) -> bool:
        texts = [m.text]
        for n in _listify(res.get("note")):
            if isinstance(n, dict) and isinstance(n.get("text"), str):
                texts.append(n["text"])
        for ev in _listify(res.get("evidence")):
            if isinstance(ev, dict):
                for c in _listify(ev.get("code")):
                    texts.append(concept_text(c))
                for d in _listify(ev.get("detail")):
                    if isinstance(d, dict) and isinstance(d.get("display"), str):
                        texts.append(d["display"])
        return any(t and _SFN_EVIDENCE_RE.search(t) for t in texts)

    def _risk_condition(self, res: dict[str, Any], m: ConceptMatch, clin: str, active: bool, ref: str | None,
                        label: str) -> None:
        f = self.f
        n = m.names
        # ``label`` is label_of(res.get("code"), m), computed by the caller with this same m
        onset = parse_dt(res.get("onsetDateTime")) or parse_dt(res.get("recordedDate"))
        when = f" since {onset.date().isoformat()}" if onset else ""
        detail = f"{label} ({clin}{when})"
        # conditions that count whatever their status (history / permanent traits)
        if "thrombosis.history" in n:
            f.thrombosis_factors.append(Factor("history", "Prior thrombosis", ref, detail, label))
        if "thrombosis.hypercoagulable" in n:
            f.thrombosis_factors.append(Factor("hypercoagulable", "Thrombophilia / hypercoagulable state", ref,
                                               detail, label))
        if "iga.deficiency" in n:
            f.iga_deficiency.append(FactRef("IgA deficiency", detail, ref))
        if "ig.adverse-effect" in n:
            f.prior_ig_reaction.append(FactRef("Prior adverse effect of immune globulin", detail, ref))
        if "drug.anaphylaxis" in n:
            self._anaphylaxis.append((onset, FactRef("Anaphylaxis to a correctly given drug", detail, ref)))
        if "gc.intolerance" in n:
            f.gc_intolerance.append(NSCondition("gc-intolerance", label, ref, clin, "confirmed", onset, None))
        if "is.intolerance" in n:
            f.is_intolerance.append(NSCondition("is-intolerance", label, ref, clin, "confirmed", onset, None))
        if not active:
            return
        if "thrombosis.immobility" in n:
            f.thrombosis_factors.append(Factor("immobility", "Prolonged immobilisation", ref, detail, label))
        if "thrombosis.catheter" in n:
            f.thrombosis_factors.append(Factor("catheter", "Indwelling vascular catheter", ref, detail, label))
        if "thrombosis.estrogen-status" in n:
            f.thrombosis_factors.append(Factor("estrogen", "Estrogen / SERM use", ref, detail, label))
        if "thrombosis.cardiovascular" in n:
            f.thrombosis_factors.append(Factor("cardiovascular", "Cardiovascular risk factor", ref, detail, label))
        if "hyperviscosity.paraprotein" in n or "hyperviscosity.other" in n:
            f.hyperviscosity.append(Factor("hyperviscosity", "Hyperviscosity risk", ref, detail, label))
        if "renal.ckd-severe" in n:
            f.renal_critical.append(Factor("ckd-severe", "Chronic kidney disease stage 4-5", ref, detail, label))
        if "renal.dialysis" in n:
            f.renal_critical.append(Factor("dialysis", "Dialysis", ref, detail, label))
        if "renal.aki" in n:
            f.renal_critical.append(Factor("aki", "Acute kidney injury", ref, detail, label))
            f.aki.append(FactRef("Acute kidney injury", detail, ref))
        for cat, key, lab in (("renal.ckd", "ckd", "Chronic kidney disease"),
                              ("renal.transplant", "transplant", "Kidney transplant"),
                              ("renal.diabetes", "diabetes", "Diabetes mellitus"),
                              ("renal.volume-depletion", "volume", "Volume depletion"),
                              ("renal.sepsis", "sepsis", "Sepsis"),
                              ("renal.paraprotein", "paraprotein", "Paraproteinaemia")):
            if cat in n:
                f.renal_factors.append(Factor(key, lab, ref, detail, label))
        if "heart-failure" in n:
            f.heart_failure.append(Factor("heart-failure", "Heart failure / fluid overload", ref, detail, label))
        if "pregnancy" in n:
            f.pregnancy.append(FactRef("Pregnancy", detail, ref))
        for cat, lab, applies in (
            ("contra.tuberculosis", "Tuberculosis (active or latent)", "anti-TNF, high-dose glucocorticoid"),
            ("contra.demyelinating", "Demyelinating disease", "anti-TNF"),
            ("contra.heart-failure", "Heart failure", "infliximab"),
            ("contra.liver", "Liver disease", "methotrexate"),
            ("contra.renal", "Chronic kidney disease stage 4-5", "methotrexate, leflunomide"),
            ("contra.malignancy", "Prior malignancy", "anti-TNF"),
            ("contra.fungal", "Deep fungal infection", "all immunosuppressants"),
        ):
            if cat in n:
                f.contraindications.append(Factor(cat.split(".", 1)[1], lab, ref, f"{detail}; affects {applies}"))

    # ------------------------------------------------------------------ observations
    def _observations(self) -> None:
        f, th = self.f, self.th
        cands: dict[str, list[tuple[datetime, datetime | None, dict[str, Any]]]] = {}
        anti_iga: list[dict[str, Any]] = []
        memo = self.term.memo("observation-kind")
        # locals: this loop runs once per Observation (70 % of a typical record)
        ok_status, loinc_kind, dt_memo, dt_min = _OBS_OK_STATUS, _LOINC_KIND.get, _parse_dt_memo, _DT_MIN
        for res in self.record.resources.get("Observation", ()):  # of_type("Observation"), minus the generator
            if type(res) is not dict and not isinstance(res, dict):
                continue
            status = res.get("status")
            if (status if type(status) is str else str(status or "")) not in ok_status:
                continue
            code = res.get("code")
            # Fast path, same answer as _observation_kind: a first coding that is a LOINC code of a known lab
            # kind is the first LOINC code concept_codes would give, and it has a kind.
            kind = None
            if type(code) is dict:
                cds = code.get("coding")
                if type(cds) is list and cds:
                    cd = cds[0]
                    if type(cd) is dict and cd.get("system") == _LOINC_URI:
                        c = cd.get("code")
                        if type(c) is str:
                            kind = loinc_kind(c)
            if kind is not None:
                pass
            elif (key := concept_key(code) if type(code) is dict else None) is None:
                kind = self._observation_kind(code)
            else:
                kind = memo.get(key, _UNSET)
                if kind is _UNSET:
                    kind = self._observation_kind(code)
                    if len(memo) >= MEMO_MAX_ENTRIES:
                        memo.clear()
                    memo[key] = kind
            if kind is None:
                continue
            if kind is _ANTI_IGA:
                anti_iga.append(res)
                continue
            v = res.get("effectiveDateTime")
            when = dt_memo(v) if type(v) is str and len(v) <= 64 else None  # parse_dt, inlined
            if when is None:
                when = (parse_dt(v) or parse_dt(res.get("effectiveInstant"))
                        or parse_dt((res.get("effectivePeriod") or {}).get("start")
                                    if isinstance(res.get("effectivePeriod"), dict) else None)
                        or parse_dt(res.get("issued")))
            lst = cands.get(kind)
            if lst is None:
                lst = cands[kind] = []
            lst.append((when or dt_min, when, res))
        for lst in cands.values():  # newest first; undated last; stable among equal dates
            lst.sort(key=_FIRST, reverse=True)

        lab_cut = self.now - timedelta(days=th.lab_recency_days)
        w_cut = self.now - timedelta(days=th.weight_recency_days)
        f.egfr = self._latest(cands.get("egfr"), "egfr", lab_cut)
        f.creatinine = self._latest(cands.get("creatinine"), "creatinine", lab_cut)
        f.creatinine_series = self._series(cands.get("creatinine"), "creatinine",
                                           self.now - timedelta(days=max(th.lab_recency_days,
                                                                         th.aki_baseline_window_days + 2)))
        f.weight = self._latest(cands.get("weight"), "weight", w_cut)
        if f.weight is None:
            f.weight = self._latest(cands.get("weight_stated"), "weight_stated", w_cut)
            f.weight_stated = f.weight is not None
        f.height = self._latest(cands.get("height"), "height", None)
        f.iga_level = self._latest(cands.get("iga"), "iga", None)
        self._hba1c = self._latest(cands.get("hba1c"), "hba1c", None)
        mspike = self._latest(cands.get("mspike"), "mspike", None)
        if mspike is not None and mspike.value > 0:
            f.hyperviscosity.append(Factor("paraprotein", "Monoclonal protein present", mspike.reference,
                                           mspike.fact().value))
            f.renal_factors.append(Factor("paraprotein", "Paraproteinaemia (M-spike)", mspike.reference,
                                          mspike.fact().value))
        for _, when, res in cands.get("viscosity", [])[:1]:
            if self.valid(res) and self._is_high(res):
                f.hyperviscosity.append(Factor("viscosity", "Serum viscosity above reference range", ref_of(res),
                                               f"{_qty_text(res)} on {when.date() if when else '?'}"))
        for res in anti_iga:
            if self._is_positive(res) and self.valid(res):
                f.anti_iga.append(FactRef("Anti-IgA antibodies", _value_text(res), ref_of(res)))

    def _observation_kind(self, code: Any) -> str | None:
        """Lab kind of an Observation.code by LOINC, else ``_ANTI_IGA`` for an anti-IgA antibody test, else
        None. Depends only on the concept and the registry (memoised by :meth:`_observations`)."""
        for c in concept_codes(code, "LOINC"):
            kind = _LOINC_KIND.get(c)
            if kind:
                return kind
        t = concept_text(code)
        if t and _ANTI_IGA_RE.search(t) or "lab.anti-iga" in self.term.match(code).names:
            return _ANTI_IGA
        return None

    def _latest(self, lst: list[tuple[datetime, datetime | None, dict[str, Any]]] | None, kind: str,
                cutoff: datetime | None) -> LabValue | None:
        for _, when, res in lst or ():
            if cutoff is not None and (when is None or when < cutoff):
                break
            lv = self._lab(res, when, kind)
            if lv is not None:
                return lv
        return None

    def _series(self, lst: list[tuple[datetime, datetime | None, dict[str, Any]]] | None, kind: str,
                cutoff: datetime) -> list[LabValue]:
        out = []
        for _, when, res in lst or ():
            if when is None or when < cutoff:
                break
            lv = self._lab(res, when, kind)
            if lv is not None:
                out.append(lv)
        return out

    def _lab(self, res: dict[str, Any], when: datetime | None, kind: str) -> LabValue | None:
        q = res.get("valueQuantity")
        if not isinstance(q, dict):
            return None
        conv = units.convert_quantity(q, _LAB_UNIT_KIND[kind])
        ref = ref_of(res)
        if conv.value is None:
            msg = f"{_LAB_LABEL[kind]} {conv.original} ({ref or 'no id'}): {conv.problem}"
            if msg not in self.f.unit_problems:
                self.f.unit_problems.append(msg)
            return None
        if not self.valid(res):
            return None
        code = res.get("code")
        first = None  # concept_codes(code, "LOINC")[0] without the list when the first coding is LOINC
        if type(code) is dict:
            cds = code.get("coding")
            if type(cds) is list and cds and type(cds[0]) is dict and cds[0].get("system") == _LOINC_URI:
                c = cds[0].get("code")
                if type(c) is str and c:
                    first = c.strip()
        if first is None:
            codes = concept_codes(code, "LOINC")
            first = codes[0] if codes else ""
        return LabValue(_LAB_LABEL[kind], conv.value, conv.unit, when, ref, conv.original, first)

    @staticmethod
    def _is_high(res: dict[str, Any]) -> bool:
        for i in _listify(res.get("interpretation")):
            if _code_of(i) in ("h", "hh", "a", "aa", "high"):
                return True
        q = res.get("valueQuantity")
        for rr in _listify(res.get("referenceRange")):
            if isinstance(rr, dict) and isinstance(rr.get("high"), dict) and isinstance(q, dict):
                hv, v = rr["high"].get("value"), q.get("value")
                if isinstance(hv, int | float) and isinstance(v, int | float) and v > hv:
                    return True
        return False

    def _is_positive(self, res: dict[str, Any]) -> bool:
        for i in _listify(res.get("interpretation")):
            if _code_of(i) in ("pos", "h", "hh", "a", "aa", "det", "positive"):
                return True
        text = ""
        if isinstance(res.get("valueCodeableConcept"), dict):
            text = concept_text(res["valueCodeableConcept"]) or _code_of(res["valueCodeableConcept"])
        elif isinstance(res.get("valueString"), str):
            text = res["valueString"]
        if text:
            return bool(_POSITIVE_RE.search(text)) and not _NEGATIVE_RE.search(text)
        return self._is_high(res)

    # ------------------------------------------------------------------ medications
    def _medication_concept(self, res: dict[str, Any]) -> Any:
        cc = res.get("medicationCodeableConcept")
        if isinstance(cc, dict):
            return cc
        mref = res.get("medicationReference")
        if isinstance(mref, dict) and isinstance(mref.get("reference"), str):
            r = mref["reference"]
            if r.startswith("#"):
                for c in _listify(res.get("contained")):
                    if isinstance(c, dict) and c.get("id") == r[1:]:
                        return c.get("code")
            if self._medications is None:
                self._medications = {}
                for med in self.record.of_type("Medication"):
                    if isinstance(med, dict) and isinstance(med.get("id"), str):
                        self._medications[med["id"]] = med
            med = self._medications.get(r.rsplit("/", 1)[-1])
            if med is not None:
                return med.get("code")
            if isinstance(mref.get("display"), str):
                return {"text": mref["display"]}
        return None

    def _medications_all(self) -> None:
        self._anaphylaxis_done = False
        for rtype in _MEDICATION_X:
            for res in self.record.of_type(rtype):
                if isinstance(res, dict):
                    self._medication(res, rtype)

    def _medication(self, res: dict[str, Any], rtype: str) -> None:
        concept = self._medication_concept(res)
        m = self.term.match(concept, medication=True)
        cls = m.drug_class
        risk_groups = m.names & _RISK_DRUG_GROUPS
        if cls is None and not risk_groups:
            return
        status_raw = str(res.get("status") or "").lower()
        if status_raw in ("entered-in-error", "cancelled", "not-taken", "not-done"):
            return
        label = concept_label(concept)
        exp = self._exposure(res, rtype, concept, m, status_raw, label)
        if exp is None:
            return
        if not self.valid(res, concept):
            return
        if exp.status == "planned":
            return  # planned (intended/draft/proposal) records are not exposure; draft orders come from context
        if cls is not None:
            self.f.exposures.setdefault(cls, []).append(exp)
        if risk_groups:
            exp.groups = frozenset(risk_groups)
            self.f.risk_drugs.append(exp)

    def _exposure(self, res: dict[str, Any], rtype: str, concept: Any, m: ConceptMatch, status_raw: str,
                  label: str) -> Exposure | None:
        th = self.th
        text = m.text
        dosages: list[dict[str, Any]] = []
        start = end = None
        status = "unknown"
        administrations = 0
        if rtype == "MedicationStatement":
            dosages = [d for d in _listify(res.get("dosage")) if isinstance(d, dict)]
            start = parse_dt(res.get("effectiveDateTime"))
            per = res.get("effectivePeriod")
            if isinstance(per, dict):
                start = parse_dt(per.get("start")) or start
                end = parse_dt(per.get("end"))
            status = _STATEMENT_STATUS.get(status_raw, "unknown")
        elif rtype == "MedicationRequest":
            dosages = [d for d in _listify(res.get("dosageInstruction")) if isinstance(d, dict)]
            start = parse_dt(res.get("authoredOn"))
            disp = res.get("dispenseRequest") if isinstance(res.get("dispenseRequest"), dict) else {}
            vp = disp.get("validityPeriod") if isinstance(disp.get("validityPeriod"), dict) else {}
            start = parse_dt(vp.get("start")) or start
            end = parse_dt(vp.get("end"))
            for d in dosages:
                t = d.get("timing") if isinstance(d.get("timing"), dict) else {}
                rep = t.get("repeat") if isinstance(t.get("repeat"), dict) else {}
                bp = rep.get("boundsPeriod") if isinstance(rep.get("boundsPeriod"), dict) else {}
                start = parse_dt(bp.get("start")) or start
                end = parse_dt(bp.get("end")) or end
                bd = rep.get("boundsDuration")
                if end is None and start and isinstance(bd, dict) and isinstance(bd.get("value"), int | float):
                    days = bd["value"] * _PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit") or "d"), 1)
                    end = start + timedelta(days=days)
            esd = disp.get("expectedSupplyDuration")
            if end is None and start and isinstance(esd, dict) and isinstance(esd.get("value"), int | float):
                rep_n = disp.get("numberOfRepeatsAllowed") if isinstance(disp.get("numberOfRepeatsAllowed"),
                                                                          int) else 0
                end = start + timedelta(days=esd["value"] * (1 + rep_n))
            intent = str(res.get("intent") or "").lower()
            status = _REQUEST_STATUS.get(status_raw, "unknown")
            if intent == "proposal":
                status = "planned"
            if status == "current" and end is not None and end < self.now:
                status = "past"
        elif rtype == "MedicationAdministration":
            d = res.get("dosage")
            dosages = [d] if isinstance(d, dict) else []
            start = parse_dt(res.get("effectiveDateTime"))
            per = res.get("effectivePeriod")
            if isinstance(per, dict):
                start = parse_dt(per.get("start")) or start
                end = parse_dt(per.get("end"))
            end = end or start
            administrations = 1
            status = "past"  # made current below when within the class window
        elif rtype == "MedicationDispense":
            if status_raw not in ("completed", ""):
                return None
            dosages = [d for d in _listify(res.get("dosageInstruction")) if isinstance(d, dict)]
            start = parse_dt(res.get("whenHandedOver"))
            ds = res.get("daysSupply")
            if start and isinstance(ds, dict) and isinstance(ds.get("value"), int | float):
                end = start + timedelta(days=ds["value"])
            status = "current" if end and end >= self.now else "past"
        if status == "current" and end is not None and end < self.now and rtype == "MedicationStatement":
            status = "past"
        # route
        route = None
        for d in dosages:
            route = route_kind(d.get("route"))
            if route:
                break
        if route is None:
            route = route_kind(None, text)
        ing = m.ingredient
        cls = m.drug_class
        exp = Exposure(ref_of(res), rtype, label, ing.key if ing else None, cls, status, status_raw, start, end,
                       route=route, administrations=administrations)
        # dose
        for d in dosages:
            mg = dose_mg_of(d, text)
            pdays = per_day_of(d)
            if rtype == "MedicationAdministration" and pdays is None:
                pdays = 1.0
            if mg is not None:
                exp.dose_mg = mg if exp.dose_mg is None else max(exp.dose_mg, mg)
                if pdays is None and cls == GC:
                    pdays = 1.0  # GC without timing: assumed once daily
            if pdays is not None:
                exp.per_day = pdays
            if mg is not None and pdays is not None:
                daily = mg * pdays
                exp.daily_mg = daily if exp.daily_mg is None else max(exp.daily_mg, daily)
            if pdays is not None and pdays >= 1 and (ing and ing.key == "methotrexate"):
                exp.daily_frequency = True
        if ing and ing.key == "methotrexate":
            if exp.dose_mg is not None and exp.per_day is not None:
                exp.weekly_mg = exp.dose_mg * exp.per_day * 7
            if not dosages and rtype != "MedicationAdministration":
                pass
            if not exp.daily_frequency and exp.per_day is None:
                for d in dosages:
                    t = str(d.get("text") or "").lower()
                    if re.search(r"\bdaily\b|every day|once a day", t) and "week" not in t:
                        exp.daily_frequency = True
        if cls == GC and ing is not None:
            if route in _NON_SYSTEMIC or self._non_systemic_atc(concept):
                return None  # A5
            if exp.daily_mg is not None and ing.pred_equiv:
                exp.pred_eq_mg = exp.daily_mg * ing.pred_equiv
                if route == "iv" and exp.pred_eq_mg >= th.gc_pulse_mg:
                    exp.pulse = True
            exp.reason_sarcoid, exp.reason_replacement = self._reasons(res)
        # infusion windows
        if rtype == "MedicationAdministration" and start is not None:
            window = {ANTI_TNF: th.infusion_current_days_anti_tnf, IG: th.infusion_current_days_ivig,
                      RITUXIMAB: th.infusion_current_days_rituximab}.get(cls or "")
            if ing and ing.key == "cyclophosphamide":
                window = th.infusion_current_days_cyclophosphamide
            if cls == GC:
                window = th.infusion_current_days_gc_pulse if exp.pulse else 2
            if window is not None and start >= self.now - timedelta(days=window):
                exp.status = "current"
        if cls == IG:
            exp.ig_kind = immune_globulin_route(text, route, concept_codes(concept, ATC))
        if rtype == "MedicationStatement" or rtype == "MedicationRequest":
            texts = [concept_text(sr) for sr in _listify(res.get("statusReason"))]
            exp.stop_reason = classify_stop_reason(texts) if status_raw == "stopped" or any(texts) else None
            if exp.stop_reason:
                exp.stop_text = "; ".join(t for t in texts if t)[:80]
        if status == "unknown":
            self.f.notes.append(f"{exp.label} ({exp.reference}): status unknown, counted as exposure; "
                                "please reconcile the medication list")
        return exp

    @staticmethod
    def _non_systemic_atc(concept: Any) -> bool:
        for c in concept_codes(concept, ATC):
            if c.startswith(("D07", "R01AD", "R03BA", "S01BA", "S01CA", "S02B", "S03B", "A07EA", "C05AA", "A01AC")):
                return True
        return False

    def _reasons(self, res: dict[str, Any]) -> tuple[bool | None, bool]:
        """(reason points to sarcoidosis/NS, reason is adrenal replacement); None = no reason recorded."""
        found = False
        sarcoid = False
        replacement = False
        for rc in _listify(res.get("reasonCode")):
            found = True
            n = self.term.match(rc).names
            sarcoid = sarcoid or "sarcoidosis" in n or "ns.manifestation" in n
            replacement = replacement or "adrenal-insufficiency" in n
        for rr in _listify(res.get("reasonReference")):
            if isinstance(rr, dict) and isinstance(rr.get("reference"), str):
                found = True
                m = self._cond_by_ref.get(rr["reference"].split("/_history")[0])
                if m is not None:
                    sarcoid = sarcoid or "sarcoidosis" in m.names or "ns.manifestation" in m.names
                    replacement = replacement or "adrenal-insufficiency" in m.names
        return (sarcoid if found else None), replacement

    # ------------------------------------------------------------------ allergy / device / encounter
    def _allergies(self) -> None:
        f = self.f
        ig_exposed = [e.start for e in f.of_class(IG) if e.start]
        for onset, fr in self._anaphylaxis:
            if ig_exposed and (onset is None or min(ig_exposed) <= onset):
                f.prior_ig_reaction.append(fr)
                f.prior_ig_reaction_severe = True
        for res in self.record.of_type("AllergyIntolerance"):
            if not isinstance(res, dict):
                continue
            ver = _code_of(res.get("verificationStatus"))
            clin = _code_of(res.get("clinicalStatus")) or "active"
            if ver in ("refuted", "entered-in-error") or clin == "resolved":
                continue
            m = self.term.match(res.get("code"), medication=True)
            if m.ingredient is None:
                continue
            if not self.valid(res):
                continue
            severe = str(res.get("criticality") or "") == "high"
            texts = []
            for r in _listify(res.get("reaction")):
                if isinstance(r, dict):
                    severe = severe or r.get("severity") == "severe"
                    for man in _listify(r.get("manifestation")):
                        texts.append(concept_text(man))
            if any(t and _ANAPHYLAXIS_RE.search(t) for t in texts):
                severe = True
            detail = f"{concept_label(res.get('code'))}" + (f": {', '.join(t for t in texts if t)}" if texts else "")
            fr = FactRef("Allergy/intolerance", detail + (" (severe)" if severe else ""), ref_of(res))
            if m.ingredient.drug_class == IG:
                f.prior_ig_reaction.append(fr)
                f.prior_ig_reaction_severe = f.prior_ig_reaction_severe or severe
            f.drug_allergies.setdefault(m.ingredient.key, []).append(fr)

    def _devices(self) -> None:
        for res in self.record.of_type("Device"):
            if not isinstance(res, dict):
                continue
            if str(res.get("status") or "active") not in ("active", ""):
                continue
            text = concept_text(res.get("type"))
            if not text or not _CATHETER_RE.search(text):
                continue
            if self.valid(res):
                self.f.thrombosis_factors.append(Factor("catheter", "Indwelling vascular catheter", ref_of(res),
                                                        text.split(" | ")[0]))

    def _encounters(self) -> None:
        if not self._ns_refs:
            return
        for res in self.record.of_type("Encounter"):
            if not isinstance(res, dict) or res.get("status") not in ("in-progress", "arrived", "onleave"):
                continue
            cls = res.get("class")
            code = (cls.get("code") if isinstance(cls, dict) else "") or ""
            if str(code).upper() not in ("IMP", "ACUTE", "NONAC", "EMER", "SS"):
                continue
            about_ns = any("ns.specific" in self.term.match(rc).names for rc in _listify(res.get("reasonCode")))
            for d in _listify(res.get("diagnosis")) + _listify(res.get("reasonReference")):
                r = d.get("condition") if isinstance(d, dict) and "condition" in d else d
                if isinstance(r, dict) and str(r.get("reference") or "") in self._ns_refs:
                    about_ns = True
            if about_ns and self.valid(res):
                self.f.inpatient_for_ns.append(FactRef("Inpatient encounter for neurosarcoidosis",
                                                       f"{code} ({res.get('status')})", ref_of(res)))

    # ------------------------------------------------------------------ draft orders
    def _planned(self) -> None:
        sel = {s.strip() for s in self.record.selections if isinstance(s, str)}
        sel_ids = {s.rsplit("/", 1)[-1] for s in sel}
        for res in self.record.draft_orders:
            if not isinstance(res, dict):
                continue
            rtype = str(res.get("resourceType") or "")
            if rtype == "MedicationRequest":
                concept = self._medication_concept(res)
            elif rtype in ("ServiceRequest", "MedicationOrder", "DeviceRequest"):
                concept = res.get("code") or res.get("medicationCodeableConcept")
            else:
                concept = None
            ref = ref_of(res) or f"{rtype}/(no id)"
            selected = bool(sel) and (ref in sel or str(res.get("id")) in sel_ids)
            m = self.term.match(concept, medication=True)
            label = concept_label(concept)
            dosages = [d for d in _listify(res.get("dosageInstruction")) if isinstance(d, dict)]
            route = None
            for d in dosages:
                route = route_kind(d.get("route"))
                if route:
                    break
            route = route or route_kind(None, m.text)
            ing = m.ingredient
            po = PlannedOrder(ref, rtype, label, ing.key if ing else None, m.drug_class,
                              ing.tier if ing else ({GC: 1, SECOND_LINE: 2, ANTI_TNF: 3, RITUXIMAB: 4}
                                                    .get(m.drug_class or "")), selected, route)
            if m.drug_class is not None and not self.valid(res, concept):
                po.drug_class = None
                po.tier = None
            elif m.drug_class == IG:
                text = m.text + " " + " ".join(str(d.get("text") or "") for d in dosages)
                po.ig_kind = immune_globulin_route(text, route, concept_codes(concept, ATC))
                po.ig_route_assumed = route is None and "J06BA02" not in concept_codes(concept, ATC) and \
                    not re.search(r"intravenous|\bivig\b|\bigiv\b", text, re.IGNORECASE)
                po.dose = ordered_ig_dose(res, self.th)
            elif m.drug_class == GC and ing is not None:
                if route in _NON_SYSTEMIC or self._non_systemic_atc(concept):
                    po.drug_class, po.tier = None, None
                else:
                    for d in dosages:
                        mg = dose_mg_of(d, m.text)
                        pd = per_day_of(d) or (1.0 if mg is not None else None)
                        if mg is not None and pd is not None and ing.pred_equiv:
                            pe = mg * pd * ing.pred_equiv
                            po.pred_eq_mg = pe if po.pred_eq_mg is None else max(po.pred_eq_mg, pe)
                    po.pulse = route == "iv" and po.pred_eq_mg is not None and po.pred_eq_mg >= self.th.gc_pulse_mg
            elif ing is not None and ing.key == "methotrexate":
                for d in dosages:
                    mg = dose_mg_of(d, m.text)
                    pd = per_day_of(d)
                    if pd is not None and pd >= 1:
                        po.daily_frequency = True
                    if mg is not None and pd is not None:
                        po.weekly_mg = mg * pd * 7
                    t = str(d.get("text") or "").lower()
                    if pd is None and re.search(r"\bdaily\b|every day|once a day", t) and "week" not in t:
                        po.daily_frequency = True
            self.f.planned_orders.append(po)
        if sel and not any(o.selected for o in self.f.planned_orders):
            self.f.notes.append("selections did not match any draft order; all draft orders were evaluated")

    # ------------------------------------------------------------------ derived facts
    def _derive(self) -> None:
        f, th = self.f, self.th
        # body size (decision 11)
        if f.weight is not None:
            f.dosing_weight, f.dosing_weight_basis = f.weight.value, "actual"
            if f.height is not None and f.height.value > 0:
                h_m = f.height.value / 100
                f.bmi = f.weight.value / (h_m * h_m)
                if f.sex in ("male", "female"):
                    inches = f.height.value / 2.54
                    f.ibw = (50.0 if f.sex == "male" else 45.5) + 2.3 * (inches - 60)
                    if f.bmi >= th.adjusted_weight_bmi and f.weight.value > f.ibw:
                        f.adjusted_weight = f.ibw + th.adjusted_weight_factor * (f.weight.value - f.ibw)
                        if th.use_adjusted_weight:
                            f.dosing_weight, f.dosing_weight_basis = f.adjusted_weight, "adjusted"
        # eGFR computed from creatinine when no measured eGFR (CKD-EPI 2021, REN-CKD)
        if f.egfr is None and f.creatinine is not None and f.age is not None and f.sex in ("male", "female"):
            scr = f.creatinine.value
            k, a = (0.7, -0.241) if f.sex == "female" else (0.9, -0.302)
            egfr = 142 * min(scr / k, 1) ** a * max(scr / k, 1) ** -1.200 * 0.9938 ** f.age
            if f.sex == "female":
                egfr *= 1.012
            f.egfr = LabValue("eGFR (computed, CKD-EPI 2021)", round(egfr), "mL/min/{1.73_m2}", f.creatinine.when,
                              f.creatinine.reference, "", computed=True)
        # renal
        if f.egfr is not None:
            if f.egfr.value < th.egfr_critical:
                f.renal_critical.insert(0, Factor("egfr", f"eGFR below {fmt(th.egfr_critical)}", f.egfr.reference,
                                                  f.egfr.fact().value))
            elif f.egfr.value < th.egfr_warning:
                f.renal_factors.insert(0, Factor("egfr", f"eGFR below {fmt(th.egfr_warning)}", f.egfr.reference,
                                                 f.egfr.fact().value))
        aki = kdigo_aki(f.creatinine_series, th)
        if aki is not None:
            f.renal_critical.append(aki)
            f.aki.append(aki.fact())
        if f.age is not None and f.age > th.renal_age_years:
            f.renal_factors.append(Factor("age", f"Age above {th.renal_age_years}", f.patient_ref,
                                          f"{f.age} years"))
        hb = getattr(self, "_hba1c", None)
        if hb is not None and hb.value >= th.hba1c_diabetes_percent and not any(
                x.key == "diabetes" for x in f.renal_factors):
            f.renal_factors.append(Factor("diabetes", "Diabetes (HbA1c)", hb.reference, hb.fact().value))
        for e in f.risk_drugs:
            if not e.current:
                continue
            if "nephrotoxic-drug" in e.groups and self._systemic_nephrotoxic(e):
                f.renal_factors.append(Factor("nephrotoxic", "Nephrotoxic drug", e.reference, e.label,
                                              f"nephrotoxic drug ({e.ingredient})"))
            if "estrogen-thrombosis-risk" in e.groups:
                f.thrombosis_factors.append(Factor("estrogen", "Estrogen / SERM use", e.reference, e.label,
                                                   "estrogen/SERM"))
        # thrombosis
        if f.age is not None and f.age >= th.thrombosis_age_years:
            f.thrombosis_factors.insert(0, Factor("age", f"Age {th.thrombosis_age_years} or older", f.patient_ref,
                                                  f"{f.age} years"))
        if f.bmi is not None and f.bmi >= th.adjusted_weight_bmi:
            f.thrombosis_factors.append(Factor("cardiovascular", "Cardiovascular risk factor",
                                               f.weight.reference if f.weight else None,
                                               f"obesity, BMI {fmt(f.bmi)} kg/m2", f"obesity (BMI {fmt(f.bmi)})"))
        if f.hyperviscosity:
            hv = f.hyperviscosity[0]
            f.thrombosis_factors.append(Factor("hyperviscosity", "Hyperviscosity", hv.reference, hv.detail))
        if f.heart_failure:
            hf = f.heart_failure[0]
            f.thrombosis_factors.append(Factor("cardiovascular", "Cardiovascular risk factor", hf.reference,
                                               hf.detail, hf.short))
        for p in f.pregnancy:
            f.thrombosis_factors.append(Factor("pregnancy", "Pregnancy (hypercoagulable; not a label factor)",
                                               p.reference, p.value))
            f.contraindications.append(Factor("pregnancy", "Pregnancy", p.reference,
                                              f"{p.value}; affects methotrexate, leflunomide, cyclophosphamide"))
        if f.egfr is not None and f.egfr.value < th.egfr_critical and not any(
                c.key == "renal" for c in f.contraindications):
            f.contraindications.append(Factor("renal", "eGFR below " + fmt(th.egfr_critical), f.egfr.reference,
                                              f"{f.egfr.fact().value}; affects methotrexate, leflunomide"))
        f.thrombosis_factors = _dedupe_factors(f.thrombosis_factors)
        f.renal_factors = _dedupe_factors(f.renal_factors)
        f.renal_critical = _dedupe_factors(f.renal_critical)
        # IgA level (decision 10)
        if f.iga_level is not None and f.iga_level.value < th.iga_deficiency_mg_dl:
            f.iga_deficiency.append(f.iga_level.fact(f"Serum IgA below {fmt(th.iga_deficiency_mg_dl)} mg/dL"))
        for msg in f.unit_problems:
            self.record.notes.append(msg)

    @staticmethod
    def _systemic_nephrotoxic(e: Exposure) -> bool:
        if e.route in _NON_SYSTEMIC or e.route == "transdermal":
            return False
        if e.ingredient == "acyclovir":
            return e.route == "iv"
        if e.ingredient == "vancomycin":
            return e.route != "oral"
        return True

    _anaphylaxis: list[tuple[datetime | None, FactRef]]


def _icd_codes(res: dict[str, Any]) -> set[str]:
    return {c[:3] for c in concept_codes(res.get("code"), "ICD10")}


def _dedupe_factors(factors: list[Factor]) -> list[Factor]:
    seen: set[tuple[str, str | None]] = set()
    out = []
    for fa in factors:
        k = (fa.key, fa.reference)
        if k not in seen:
            seen.add(k)
            out.append(fa)
    return out


def _qty_text(res: dict[str, Any]) -> str:
    q = res.get("valueQuantity")
    if isinstance(q, dict):
        return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    return "?"


def _value_text(res: dict[str, Any]) -> str:
    if isinstance(res.get("valueCodeableConcept"), dict):
        return concept_label(res["valueCodeableConcept"])
    if isinstance(res.get("valueString"), str):
        return res["valueString"]
    return _qty_text(res)


def kdigo_aki(series: list[LabValue], th: Thresholds) -> Factor | None:
    """KDIGO creatinine criterion on the latest value (series newest first, mg/dL)."""
    if len(series) < 2 or series[0].when is None:
        return None
    latest = series[0]
    assert latest.when is not None
    prior = [s for s in series[1:] if s.when is not None]
    win48 = [s for s in prior if latest.when - s.when <= timedelta(hours=th.aki_rise_window_hours)]
    if win48:
        low = min(win48, key=lambda s: s.value)
        if latest.value - low.value >= th.aki_creatinine_rise_mg_dl - 1e-9:
            return Factor("aki", "Acute kidney injury (KDIGO creatinine rise)", latest.reference,
                          f"creatinine {fmt(low.value, 2)} -> {fmt(latest.value, 2)} mg/dL within "
                          f"{th.aki_rise_window_hours} h (rise >= {fmt(th.aki_creatinine_rise_mg_dl)} mg/dL)")
    win7 = [s for s in prior if latest.when - s.when <= timedelta(days=th.aki_baseline_window_days)]
    if win7:
        low = min(win7, key=lambda s: s.value)
        if low.value > 0 and latest.value >= th.aki_ratio * low.value - 1e-9:
            return Factor("aki", "Acute kidney injury (KDIGO creatinine rise)", latest.reference,
                          f"creatinine {fmt(low.value, 2)} -> {fmt(latest.value, 2)} mg/dL "
                          f"(x{fmt(latest.value / low.value, 2)} within {th.aki_baseline_window_days} days)")
    return None


# ============================================================================================ IVIG order dose


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
    for d in _listify(res.get("dosageInstruction")):
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("text"), str):
            od.text = (od.text + " " + d["text"]).strip()
        g = gpk = None
        for dar in _listify(d.get("doseAndRate")):
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
            days = bd["value"] * _PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit") or "d"), 1)
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
            od.days = esd["value"] * _PERIOD_DAYS.get(str(esd.get("code") or esd.get("unit") or "d"), 1)
            if od.admins_per_day is None:
                od.admins_per_day = 1.0
    return od


# ============================================================================================ entry point


def build_facts(record: PatientRecord, thresholds: Thresholds | None = None,
                terminology: Terminology | None = None) -> Facts:
    b = _Builder(record, thresholds or get_thresholds(), terminology or get_terminology())
    b._anaphylaxis = []
    return b.build()
