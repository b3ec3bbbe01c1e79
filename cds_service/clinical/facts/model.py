"""The facts of one request as plain dataclasses: what the stages and rules read.

Every fact keeps the FHIR reference (``"Observation/abc"``) it came from, so a card can cite it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime

from ..condition_dates import ConditionDate
from ..immune_globulin import IgOrder
from ..memo import memoised
from ..terminology import ANTI_TNF, GC, IG, RITUXIMAB, SECOND_LINE

# routes that do not reach the whole body (A5): a glucocorticoid given this way is not on the ladder
NON_SYSTEMIC = ("topical", "inhaled", "nasal", "ophthalmic", "otic", "intra-articular", "rectal", "dental",
                "intralesional", "transdermal-local")

@dataclass(frozen=True, slots=True, init=False)
class FactRef:
    """One fact as shown on a card: what, its value, and the FHIR resource it came from."""

    fact: str
    value: str
    reference: str | None = None

    def __init__(self, fact: str, value: str, reference: str | None = None) -> None:
        # the slots written directly: the generated __init__ of a frozen dataclass goes through
        # object.__setattr__, twice as slow, and a call makes a FactRef for every fact a card cites
        _SET_FACT(self, fact)
        _SET_VALUE(self, value)
        _SET_REFERENCE(self, reference)

    def as_dict(self) -> dict[str, str]:
        d = {"fact": self.fact, "value": self.value}
        if self.reference:
            d["reference"] = self.reference
        return d


_SET_FACT, _SET_VALUE, _SET_REFERENCE = (FactRef.__dict__[name].__set__ for name in ("fact", "value", "reference"))

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
    comparator: str | None = None  # "<", "<=", ">=", ">": the value is a bound (decision 31)

    def fact(self, label: str | None = None) -> FactRef:
        shown = f"{self.comparator or ''}{fmt(self.value)} {_SHOW_UNIT.get(self.unit, self.unit)}"
        if self.original and not self.original.endswith(self.unit) and not self.computed:
            shown += f" (recorded {self.original})"
        if self.computed and "(" in self.label:  # how it was obtained, e.g. "computed, bedside Schwartz"
            shown += " (" + self.label.split("(", 1)[1]
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
    date_source: str = ""  # the Condition field the onset came from (decision 24); "" = onsetDateTime
    from_text: bool = False  # found only in uncoded text: at most "possible NS", never an order (decision 47)

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
        note = ConditionDate(None, self.date_source).note  # decision 24: say where a date came from
        if note:
            when += f", {note}"
        if self.from_text:
            when += ", named only in text"
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
    reason_ns: bool = False  # reasonCode/reasonReference names neurosarcoidosis itself (decision 19)
    current_pred_eq_mg: float | None = None  # GC: the step in force today (decision 46); None = unknown
    administrations: int = 0
    ig_kind: str | None = None  # ivig | scig | imig (decision 36)
    groups: frozenset[str] = frozenset()
    local_estrogen: bool = False  # estrogen applied in the vagina at a local dose (decision 38)

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
class PlannedOrder:
    reference: str
    resource_type: str
    label: str
    ingredient: str | None
    drug_class: str | None
    tier: int | None
    selected: bool
    route: str | None
    ig_kind: str | None = None  # ivig | scig | imig (decision 36)
    ig_route_assumed: bool = False
    ig_order: IgOrder | None = None  # dose lines at the product's own concentration (decisions 34-35)
    pred_eq_mg: float | None = None
    pulse: bool = False
    weekly_mg: float | None = None
    daily_frequency: bool = False

    @property
    def is_ladder(self) -> bool:
        return self.drug_class in (GC, SECOND_LINE, ANTI_TNF, RITUXIMAB) and (
            self.drug_class != GC or self.route not in NON_SYSTEMIC
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
    egfr_note: str = ""  # why there is no eGFR although a creatinine is on record (decision 30)
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
    prior_ig_reaction_mild: list[FactRef] = field(default_factory=list)  # not serious (decision 37)
    prior_ig_reaction_unknown: list[FactRef] = field(default_factory=list)  # severity not recorded
    anticoagulants: list[tuple[FactRef, bool | None]] = field(default_factory=list)  # (fact, treatment dose?)
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
    def ns_text_only(self) -> bool:
        """Possible NS read only from uncoded text: conditional wording, never a suggested order (decision 47)."""
        return self.ns_status == "possible" and bool(self.possible_ns) and all(c.from_text for c in self.possible_ns)

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
        """Once an immune globulin order is among the orders the hook is about, every immune globulin draft
        of the request: one course, however it was split into orders (decision 35; on order-select the
        other unsigned drafts are part of the course being selected)."""
        if not any(o.is_ig for o in self.the_orders):
            return []
        return [o for o in self.planned_orders if o.is_ig]

    @property
    def thrombosis_high_risk(self) -> bool:
        return any(f.key in ("history", "active", "hypercoagulable") for f in self.thrombosis_factors)

    @property
    def anticoagulated(self) -> list[FactRef]:
        """Current anticoagulants at a treatment dose (decision 38)."""
        return [fr for fr, treats in self.anticoagulants if treats]

    @property
    def thrombosis_factor_count(self) -> int:
        return len({f.key for f in self.thrombosis_factors})

    def current_ig(self) -> list[Exposure]:
        return [e for e in self.of_class(IG) if e.current]




def fmt(x: float | None, digits: int = 1) -> str:
    """Numbers as cards show them: no trailing zeros, thousands separator."""
    try:
        return _fmt_memo(x, digits)
    except TypeError:  # unhashable: not a number anyway; let _fmt raise what it raises
        return _fmt(x, digits)


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "?"
    if not math.isfinite(x) or abs(x) >= 1e15:  # an absurd value from a record: shown, never a crash
        return f"{x:g}"
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    s = f"{x:,.{digits}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s



_fmt_memo = memoised(functools.lru_cache(maxsize=1024, typed=True)(_fmt))  # typed: 1, 1.0 and True kept apart
