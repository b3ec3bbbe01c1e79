"""What every rule reads (:class:`Context`) and returns (:class:`Fired`), and helpers shared by rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..facts import FactRef, Facts, PlannedOrder, fmt
from ..stages import StageResult
from ..thresholds import Thresholds

ORDER_HOOKS = ("order-select", "order-sign")
PATIENT_VIEW = "patient-view"


@dataclass
class Fired:
    rule_id: str
    facts: list[FactRef] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    suggestions: list[str] = field(default_factory=list)  # keys of the YAML suggestions to offer
    conditional: bool = False  # A16 wording


_PHRASES: dict[str, dict[str, str]] = {}


def phrase(group: str, name: str, **values: Any) -> str:
    """A sentence of ``cards/_phrases.yaml`` (``_phrases.<group>.<name>``), filled with ``values``."""
    if not _PHRASES:
        from ..cards import card_library  # imported here: cards imports the rules

        _PHRASES.update(card_library()["_phrases"])
    text = _PHRASES[group][name]
    return text.format(**values) if values else text


@dataclass
class Context:
    facts: Facts
    stage: StageResult
    hook: str
    th: Thresholds
    # computed once per evaluation (the rules only read the facts): several safety rules ask for the orders
    _orders: list[PlannedOrder] | None = field(default=None, repr=False)
    _ig: list[PlannedOrder] | None = field(default=None, repr=False)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def orders(self) -> list[PlannedOrder]:
        if self._orders is None:
            self._orders = self.facts.the_orders
        return list(self._orders)

    @property
    def ladder_trigger(self) -> bool:
        """Decision 6: ladder and indication cards on patient-view, or when an order is a ladder drug or IG."""
        if self.hook == PATIENT_VIEW:
            return True
        return any(o.is_ladder or o.is_ig for o in self.orders)

    @property
    def max_planned_tier(self) -> int:
        return max((o.tier or 0 for o in self.facts.planned_orders if o.is_ladder), default=0)

    @property
    def ivig_planned(self) -> bool:
        return any(o.is_ig for o in self.facts.planned_orders)

    def ig_orders(self) -> list[PlannedOrder]:
        """Decision 2: the immune globulin orders the safety cards are about (order hooks only); a copy,
        so a rule cannot change what the next one sees."""
        if self._ig is None:
            f = self.facts
            orders = f.ig_orders if self.hook in ORDER_HOOKS else []
            if orders and self.th.ivig_safety_sarcoidosis_only and not f.has_sarcoidosis:
                orders = []
            self._ig = orders
        return list(self._ig)

    def once(self, name: str, compute: Any) -> Any:
        """``compute(self)`` once per evaluation (rules of one group share a finding)."""
        if name not in self._memo:
            self._memo[name] = compute(self)
        return self._memo[name]

    def weight_facts(self) -> list[FactRef]:
        """:func:`weight_facts` of the facts, found once per evaluation (three cards cite them), a copy."""
        return list(self.once("weight-facts", lambda c: weight_facts(c.facts)))


# ------------------------------------------------------------------------------ dose plan (decision 11)


@dataclass
class DosePlan:
    actual_kg: float
    dosing_kg: float
    basis: str
    adjusted_kg: float | None
    course_g: float
    per_day_g: float
    days: int


def ivig_plan(facts: Facts, th: Thresholds) -> DosePlan | None:
    if facts.weight is None or facts.dosing_weight is None:
        return None
    course = round(th.ivig_dose_g_per_kg * facts.dosing_weight)
    days = th.ivig_suggested_days
    return DosePlan(facts.weight.value, facts.dosing_weight, facts.dosing_weight_basis, facts.adjusted_weight,
                    course, round(course / days, 1), days)


def ivig_values(facts: Facts, th: Thresholds) -> dict[str, Any]:
    p = ivig_plan(facts, th)
    if p is None:
        return {}
    return {"course_g": fmt(p.course_g), "days": p.days, "per_day_g": fmt(p.per_day_g), "basis": p.basis,
            "dw_kg": fmt(p.dosing_kg), "per_day_g_num": p.per_day_g}


def weight_facts(facts: Facts) -> list[FactRef]:
    out = []
    if facts.weight is not None:
        out.append(facts.weight.fact("Body weight" + (" (patient-stated)" if facts.weight_stated else "")))
    if facts.height is not None:
        out.append(facts.height.fact())
    if facts.bmi is not None:
        out.append(FactRef("BMI", f"{fmt(facts.bmi)} kg/m2", facts.weight.reference if facts.weight else None))
    if facts.adjusted_weight is not None and facts.ibw is not None:
        out.append(FactRef("Ideal / adjusted body weight",
                           f"IBW {fmt(facts.ibw)} kg (Devine), adjusted {fmt(facts.adjusted_weight)} kg", None))
    return out


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
