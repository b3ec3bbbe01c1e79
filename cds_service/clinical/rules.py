"""The rules: which cards fire, with which numbers and which facts.

Texts live in ``cards/*.yaml`` (rendered by :mod:`cds_service.clinical.cards`); thresholds in
:mod:`cds_service.clinical.thresholds`; code lists in :mod:`cds_service.clinical.terminology`. A rule here only decides
*whether* a card fires, *which variant*, the values for its templates, the facts it cites and which
suggestions it enables.

When cards show (decision 6): ladder and IVIG-indication cards only when one of "the orders" (the
selections on order-select, every draft on order-sign) is a ladder drug or an immune globulin, or on
patient-view. An escalation card is suppressed when any draft order is a drug of that tier or higher.
IVIG safety cards fire for every immune globulin order (SCIG included); dose rules only for IVIG.

Possible / suspected neurosarcoidosis (A16) is folded into the stage and indication cards as
conditional wording ("If NS confirmed: ..."); there is no separate ``ladder.possible-ns`` card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .facts import FactRef, Facts, PlannedOrder, fmt
from .stages import StageResult
from .terminology import GC, IG, SECOND_LINE
from .thresholds import Thresholds

ORDER_HOOKS = ("order-select", "order-sign")
PATIENT_VIEW = "patient-view"

STAGE_RULES = {
    "S1": "stage.s1-untreated",
    "S2": "stage.s2-on-gc",
    "S2b": "stage.s2b-gc-subthreshold",
    "S3R": "stage.s3r-gc-refractory",
    "S3I": "stage.s3i-gc-intolerant",
    "S4": "stage.s4-on-second-line",
    "S5": "stage.s5-second-line-refractory",
    "S6": "stage.s6-on-anti-tnf",
    "S7": "stage.s7-refractory-all",
}
# escalation tier each escalation card proposes (suppressed if a draft order is this tier or higher)
ESCALATION_TIER = {"S1": 1, "S3R": 2, "S3I": 2, "S5": 3, "S7": 4}

RULE_IDS = (
    *STAGE_RULES.values(),
    "ladder.mtx-frequency",
    "ivig.indication.steroid-resistant",
    "ivig.indication.decompensated",
    "ivig.indication.sfn",
    "ivig.indication.conduction-block",
    "ivig.indication.immunosuppression-contraindicated",
    "ivig.safety.renal",
    "ivig.safety.renal-baseline-missing",
    "ivig.safety.thrombosis",
    "ivig.safety.hyperviscosity",
    "ivig.safety.iga",
    "ivig.safety.prior-reaction",
    "ivig.safety.heart-failure-volume",
    "ivig.dose",
    "ivig.dose.weight-missing",
)

_ANTI_TNF_CONTRA = ("tuberculosis", "demyelinating", "heart-failure", "malignancy", "fungal")
_MTX_CONTRA = ("pregnancy", "liver", "renal", "fungal")


@dataclass
class Fired:
    rule_id: str
    facts: list[FactRef] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    suggestions: list[str] = field(default_factory=list)  # keys of the YAML suggestions to offer
    conditional: bool = False  # A16 wording


@dataclass
class Context:
    facts: Facts
    stage: StageResult
    hook: str
    th: Thresholds
    # computed once per evaluation (the rules only read the facts): six safety rules ask for the same orders
    _orders: list[PlannedOrder] | None = field(default=None, repr=False)
    _ig: list[PlannedOrder] | None = field(default=None, repr=False)

    @property
    def orders(self) -> list[PlannedOrder]:
        if self._orders is None:
            self._orders = self.facts.the_orders
        return list(self._orders)

    @property
    def ladder_trigger(self) -> bool:
        if self.hook == PATIENT_VIEW:
            return True
        return any(o.is_ladder or o.is_ig for o in self.orders)

    @property
    def max_planned_tier(self) -> int:
        return max((o.tier or 0 for o in self.facts.planned_orders if o.is_ladder), default=0)

    @property
    def ivig_planned(self) -> bool:
        return any(o.is_ig for o in self.facts.planned_orders)


# ============================================================================================ dose helpers


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


def _ivig_values(facts: Facts, th: Thresholds) -> dict[str, Any]:
    p = ivig_plan(facts, th)
    if p is None:
        return {}
    return {"course_g": fmt(p.course_g), "days": p.days, "per_day_g": fmt(p.per_day_g), "basis": p.basis,
            "dw_kg": fmt(p.dosing_kg), "per_day_g_num": p.per_day_g}


def _weight_facts(facts: Facts) -> list[FactRef]:
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


# ============================================================================================ ladder


def rule_mtx_frequency(ctx: Context) -> list[Fired]:
    s = ctx.stage
    if not s.mtx_daily:
        return []
    daily_draft = any(o.ingredient == "methotrexate" and o.daily_frequency for o in ctx.orders)
    if not daily_draft and not (ctx.ladder_trigger and (ctx.hook == PATIENT_VIEW or ctx.orders)):
        return []
    return [Fired("ladder.mtx-frequency", facts=list(s.mtx_daily))]


def rule_stage(ctx: Context) -> list[Fired]:
    f, s, th = ctx.facts, ctx.stage, ctx.th
    if s.mtx_daily or not s.in_scope or not ctx.ladder_trigger:
        return []
    out: list[Fired] = []
    stage = s.stage
    # a draft GC order below the first-line dose (S1/S2b): say so about the order itself
    low_gc = [o for o in f.planned_orders if o.drug_class == GC and o.is_ladder and not o.pulse
              and o.pred_eq_mg is not None and o.pred_eq_mg < th.gc_high_dose_mg]
    if stage in ("S1", "S2b") and low_gc and not any(o.drug_class == GC and o.pulse for o in f.planned_orders):
        o = low_gc[0]
        out.append(Fired("stage.s2b-gc-subthreshold", facts=s.reasons + [o.fact()], variant="draft",
                         values={"order_dose": fmt(o.pred_eq_mg), "gc_max": fmt(o.pred_eq_mg),
                                 "dose_sentence": f"The order ({o.label}) is {fmt(o.pred_eq_mg)} mg/day "
                                                  "prednisone-equivalent."},
                         conditional=s.conditional))
        return out
    rule_id = STAGE_RULES.get(stage)
    if rule_id is None:
        return []
    tier = ESCALATION_TIER.get(stage)
    if tier is not None and ctx.max_planned_tier >= tier:
        return []  # decision 6: the escalation is already being ordered
    fired = Fired(rule_id, facts=list(s.reasons), conditional=s.conditional)
    v = fired.values
    v["gc_max"] = fmt(s.gc_max_pred_eq)
    if stage == "S1":
        fired.variant = "prior_therapy" if s.prior_therapy else None
        v["prednisone_mg"] = fmt(th.prednisone_suggested_mg_day)
        v["prior_note"] = ("Earlier therapy is recorded but none is current and no continued-disease evidence "
                           "was found (A7): review whether treatment should restart." if s.prior_therapy else "")
        fired.suggestions = ["prednisone"]
    elif stage == "S2":
        v["pulse_note"] = " (including an IV pulse)" if s.gc_pulse else ""
    elif stage == "S2b":
        if not s.gc_dose_known:
            fired.variant = "unknown"
            v["dose_sentence"] = "The glucocorticoid dose could not be read from the record (free-text dosing, A8)."
        else:
            v["dose_sentence"] = (f"The highest recorded glucocorticoid dose is {fmt(s.gc_max_pred_eq)} mg/day "
                                  "prednisone-equivalent.")
    elif stage in ("S3R", "S3I"):
        v["mtx_mg"] = fmt(th.mtx_suggested_mg_week)
        v["completed_note"] = ("Relapse came after a completed glucocorticoid course (A7): restarting "
                               "glucocorticoid together with a steroid-sparing agent may be considered. "
                               if s.relapse_after_completed_gc else "")
        blockers = [c for c in f.contraindications if c.key in _MTX_CONTRA]
        v["mtx_blockers"] = list(dict.fromkeys(c.label for c in blockers))
        if blockers:
            fired.variant = "mtx_contraindicated"  # the summary names the blocker instead of advising methotrexate
            v["mtx_withheld"] = ("**No methotrexate order is proposed**: " +
                                 "; ".join(f"{c.label}" for c in blockers) + " (see facts).")
            fired.facts += [c.fact("Contraindication: ") for c in blockers]
        else:
            v["mtx_withheld"] = ""
            fired.suggestions = ["methotrexate"]
    elif stage == "S4":
        agents = sorted({e.ingredient or e.label for e in s.second_line.current})
        v["agent"] = ", ".join(agents) or "second-line agent"
        v["trial_weeks"] = fmt(th.second_line_min_trial_days / 7)
        v["mmf_note"] = ("Methotrexate had fewer relapses than mycophenolate in a retrospective comparison "
                         "(0.2 vs 0.6 relapses per patient-year). " if "mycophenolate" in agents else "")
        v["subtherapeutic_note"] = ("The methotrexate dose recorded is below the therapeutic range. "
                                    if s.mtx_subtherapeutic else "")
        if agents == ["mycophenolate"]:
            fired.variant = "mmf"
    elif stage == "S5":
        v["trial_weeks"] = fmt(th.second_line_min_trial_days / 7)
        blockers = [c for c in f.contraindications if c.key in _ANTI_TNF_CONTRA]
        v["contra_note"] = ("Recorded contraindications: " + "; ".join(c.label for c in blockers) + ". "
                            if blockers else "")
        fired.facts += [c.fact("Contraindication: ") for c in blockers]
        if blockers:
            v["ifx_note"] = "No infliximab order is proposed because of the contraindications above."
        elif f.weight is None:
            v["ifx_note"] = (f"No body weight in the last {th.weight_recency_days} days: the proposed order "
                             "is per kg; record the weight to compute the dose in mg.")
            v["ifx_per_kg"] = fmt(th.infliximab_mg_per_kg)
            fired.suggestions = ["infliximab-per-kg"]
        else:
            v["ifx_note"] = ""
            v["weight_kg"] = fmt(f.weight.value)
            v["ifx_mg"] = fmt(round(th.infliximab_mg_per_kg * f.weight.value))
            fired.suggestions = ["infliximab"]
            fired.facts.append(f.weight.fact())
    elif stage == "S6":
        agents = sorted({e.ingredient or e.label for e in s.anti_tnf.current})
        v["agent"] = ", ".join(agents) or "anti-TNF"
    out.append(fired)
    return out


# ============================================================================================ IVIG indications


def _rapid_progression(f: Facts, s: StageResult, th: Thresholds) -> list[FactRef]:
    since = f.now - timedelta(days=th.decompensation_window_days)
    new = [c for c in f.ns_conditions if c.onset and c.onset >= since]
    out: list[FactRef] = []
    if len(new) >= th.decompensation_min_new_manifestations:
        out += [c.fact() for c in new]
    pulses = [e for e in s.gc.exposures if e.pulse and e.start and e.start >= since]
    out += [FactRef("Escalation: IV glucocorticoid pulse", e.label, e.reference) for e in pulses]
    out += f.inpatient_for_ns
    out += [FactRef("Bulbar involvement", b.label, b.reference) for b in f.bulbar if b.active]
    return out


def _best_candidate(f: Facts, s: StageResult, th: Thresholds) -> list[str]:
    feats = []
    if _rapid_progression(f, s, th):
        feats.append("rapid progression")
    if f.contraindications:
        feats.append("contraindication to standard immunosuppression")
    if f.sfn or f.conduction_block or any(c.kind == "neuropathy" for c in f.ns_conditions):
        feats.append("peripheral nerve or small-fiber involvement")
    if s.stage in ("S5", "S7") or (s.gc.refractory or s.gc_intolerance) and s.second_line.all_failed:
        feats.append("failed or intolerant of glucocorticoid and another immunosuppressant")
    return feats


def rule_ivig_indications(ctx: Context) -> list[Fired]:
    f, s, th = ctx.facts, ctx.stage, ctx.th
    if not ctx.ladder_trigger or not (s.in_scope or s.sfn_pathway):
        return []
    if f.current_ig():
        return []  # IVIG-ACTIVE: safety/monitoring only
    feats = _best_candidate(f, s, th)
    base = _ivig_values(f, th)
    best = ("**Best-candidate features present:** " + ", ".join(feats) + "." if feats
            else "No best-candidate features (rapid progression, contraindication to standard "
                 "immunosuppression, peripheral nerve involvement, failure of two agents) were found.")
    offer = ["ivig"] if base and not ctx.ivig_planned else []
    out: list[Fired] = []

    def fire(rule_id: str, facts: list[FactRef], **values: Any) -> None:
        v = dict(base)
        v.update(values)
        v["best_candidate"] = best
        out.append(Fired(rule_id, facts=facts + _weight_facts(f) if offer else facts, values=v,
                         suggestions=list(offer), conditional=s.conditional))

    if s.in_scope and s.stage in ("S3R", "S5", "S7"):
        fire("ivig.indication.steroid-resistant", list(s.reasons))
    prog = _rapid_progression(f, s, th)
    cyc_planned = [o for o in f.planned_orders if o.ingredient == "cyclophosphamide"]
    cyc_given = [e for e in f.of_class(SECOND_LINE) if e.ingredient == "cyclophosphamide" and e.exposed]
    if s.in_scope and f.ns_status == "active" and prog and cyc_planned and not cyc_given:
        fire("ivig.indication.decompensated", prog + [o.fact() for o in cyc_planned],
             progression=", ".join(sorted({p.fact for p in prog})))
    if f.sfn and f.has_sarcoidosis:
        fire("ivig.indication.sfn", [c.fact() for c in f.sfn] + f.sarcoidosis[:1])
    if f.conduction_block and f.has_sarcoidosis:
        fire("ivig.indication.conduction-block", [c.fact() for c in f.conduction_block] + f.sarcoidosis[:1])
    if f.contraindications and s.in_scope:
        labels = []
        for c in f.contraindications:
            if c.label not in labels:
                labels.append(c.label)
        fire("ivig.indication.immunosuppression-contraindicated", [c.fact("Contraindication: ")
                                                                    for c in f.contraindications],
             contra_list=labels)
    return out


# ============================================================================================ IVIG safety


def _ig_context(ctx: Context) -> list[PlannedOrder]:
    if ctx._ig is None:
        ctx._ig = _ig_orders(ctx)
    return list(ctx._ig)  # a copy: a rule may not change what the next one sees


def _ig_orders(ctx: Context) -> list[PlannedOrder]:
    f = ctx.facts
    if ctx.hook not in ORDER_HOOKS:
        return []
    orders = f.ig_orders
    if not orders:
        return []
    if ctx.th.ivig_safety_sarcoidosis_only and not f.has_sarcoidosis:
        return []
    return orders


def rule_ivig_renal(ctx: Context) -> list[Fired]:
    orders = _ig_context(ctx)
    if not orders:
        return []
    f = ctx.facts
    out: list[Fired] = []
    if f.renal_critical or f.renal_factors:
        crit = bool(f.renal_critical)
        factors = f.renal_critical + f.renal_factors
        labels = []
        for x in factors:
            short = f"eGFR {fmt(f.egfr.value)}" if x.key == "egfr" and f.egfr else x.name
            if short not in labels:
                labels.append(short)
        facts = [x.fact() for x in factors]
        if f.egfr is not None and not any(x.key == "egfr" for x in factors):
            facts.append(f.egfr.fact())
        if f.creatinine is not None:
            facts.append(f.creatinine.fact())
        out.append(Fired("ivig.safety.renal", facts=facts + [o.fact() for o in orders],
                         values={"factor_list": labels}, variant="critical" if crit else None))
    if f.egfr is None and f.creatinine is None:
        probs = [p for p in f.unit_problems if "creatinine" in p.lower() or "egfr" in p.lower()]
        out.append(Fired("ivig.safety.renal-baseline-missing", facts=[o.fact() for o in orders],
                         values={"unit_note": ("Results not used because of their unit: " + "; ".join(probs) + "."
                                               if probs else "")},
                         suggestions=["creatinine", "bun"]))
    return out


def rule_ivig_thrombosis(ctx: Context) -> list[Fired]:
    orders = _ig_context(ctx)
    f, th = ctx.facts, ctx.th
    if not orders or not f.thrombosis_factors:
        return []
    n = f.thrombosis_factor_count
    high = f.thrombosis_high_risk or n >= th.thrombosis_high_risk_factor_count
    labels = _thrombosis_labels(f)
    why = []
    if any(x.key == "history" for x in f.thrombosis_factors):
        why.append("prior thrombosis")
    if any(x.key == "hypercoagulable" for x in f.thrombosis_factors):
        why.append("thrombophilia")
    if n >= th.thrombosis_high_risk_factor_count:
        why.append(f"{n} risk factors (high-risk threshold {th.thrombosis_high_risk_factor_count})")
    sentence = (f"**High risk**: {', '.join(why)}." if high else
                f"{n} risk factor(s) found (high risk from {th.thrombosis_high_risk_factor_count}, or any prior "
                "thrombosis or thrombophilia).")
    return [Fired("ivig.safety.thrombosis", facts=[x.fact() for x in f.thrombosis_factors] + [o.fact() for o in orders],
                  values={"factor_list": labels, "n_factors": n, "risk_sentence": sentence},
                  variant="high" if high else None)]


def _thrombosis_labels(f: Facts) -> list[str]:
    """The factors as named in the summary, each finding once: an obesity Condition and the obesity the
    measured BMI shows are one finding, said with its number ("obesity (BMI 40.4)"); both stay cited."""
    names = [f"age {f.age}" if x.key == "age" else x.name for x in f.thrombosis_factors]
    measured = f"obesity (BMI {fmt(f.bmi)})" if f.bmi is not None else None  # the name facts._derive gives it
    if measured in names:
        names = [n for n in names if n == measured or "obes" not in n.lower()]
    return list(dict.fromkeys(names))


def rule_ivig_hyperviscosity(ctx: Context) -> list[Fired]:
    orders = _ig_context(ctx)
    f = ctx.facts
    if not orders or not f.hyperviscosity:
        return []
    labels = []
    for x in f.hyperviscosity:
        lab = x.name
        if lab not in labels:
            labels.append(lab)
    return [Fired("ivig.safety.hyperviscosity", facts=[x.fact() for x in f.hyperviscosity] + [o.fact() for o in orders],
                  values={"factor_list": labels})]


def rule_ivig_iga(ctx: Context) -> list[Fired]:
    orders = _ig_context(ctx)
    f = ctx.facts
    if not orders:
        return []
    out: list[Fired] = []
    if f.iga_deficiency:
        crit = bool(f.anti_iga or f.prior_ig_reaction)
        out.append(Fired("ivig.safety.iga", facts=f.iga_deficiency + f.anti_iga + f.prior_ig_reaction
                         + [o.fact() for o in orders], variant="critical" if crit else None))
    elif f.prior_ig_reaction:
        out.append(Fired("ivig.safety.prior-reaction", facts=f.prior_ig_reaction + [o.fact() for o in orders],
                         variant="critical" if f.prior_ig_reaction_severe else None))
    return out


def _ordered_figures(o: PlannedOrder, f: Facts, th: Thresholds) -> dict[str, Any]:
    """Ordered daily/course dose in g and g/kg (dosing and actual weight) for one IVIG order."""
    d = o.dose
    out: dict[str, Any] = {"problems": [], "sentence": ""}
    if d is None or f.dosing_weight is None or f.weight is None:
        return out
    dw, aw = f.dosing_weight, f.weight.value
    apd = d.admins_per_day or 1.0
    if d.per_admin_g is not None:
        daily_g = d.per_admin_g * apd
    elif d.per_admin_g_per_kg is not None:
        daily_g = d.per_admin_g_per_kg * apd * dw
    else:
        out["sentence"] = "The ordered dose could not be read from the order" + (
            f" ({'; '.join(d.problems)})" if d.problems else "") + "; it was not checked."
        return out
    daily_gpk = (d.per_admin_g_per_kg * apd) if d.per_admin_g_per_kg is not None else daily_g / dw
    out["daily_g"] = daily_g
    parts = [f"Ordered ({o.label}): {fmt(daily_g)} g/day = {fmt(daily_gpk, 2)} g/kg/day"]
    if d.days is not None:
        course_g = daily_g * d.days if len(d.segments) <= 1 else sum(
            ((s[0] if s[0] is not None else (s[1] or 0) * dw) * (s[2] or 1) * (s[3] or 0)) for s in d.segments)
        course_gpk = course_g / dw
        out["course_g"] = course_g
        out["days"] = d.days
        parts.append(f"x {fmt(d.days)} day(s) = {fmt(course_g)} g = {fmt(course_gpk, 2)} g/kg by "
                     f"{f.dosing_weight_basis} weight ({fmt(course_g / aw, 2)} g/kg by actual weight)")
        if course_gpk > th.ivig_max_course_g_per_kg + 1e-9:
            out["problems"].append(f"course {fmt(course_gpk, 2)} g/kg > {fmt(th.ivig_max_course_g_per_kg)}")
        if d.days < th.ivig_min_days:
            out["problems"].append(f"{fmt(d.days)} day(s) < {th.ivig_min_days}")
        if d.days > th.ivig_max_days:
            parts.append(f"(longer than the usual {th.ivig_max_days} days)")
    else:
        parts.append("course length not stated in the order, so the course total was not checked")
    if daily_gpk > th.ivig_max_daily_g_per_kg + 1e-9:
        out["problems"].append(f"daily {fmt(daily_gpk, 2)} g/kg > {fmt(th.ivig_max_daily_g_per_kg)}")
    if d.problems:
        parts.append("(" + "; ".join(d.problems) + ")")
    out["sentence"] = " ".join(parts) + "."
    return out


def rule_ivig_dose(ctx: Context) -> list[Fired]:
    orders = [o for o in _ig_context(ctx) if o.ig_kind == "ivig"]  # SCIG: safety only, not dose rules
    f, th = ctx.facts, ctx.th
    if not orders:
        return []
    if f.weight is None or f.dosing_weight is None:
        probs = [p for p in f.unit_problems if "weight" in p.lower()]
        return [Fired("ivig.dose.weight-missing", facts=[o.fact() for o in orders],
                      values={"unit_note": ("Weights not used because of their unit: " + "; ".join(probs) + "."
                                            if probs else "")})]
    plan = ivig_plan(f, th)
    assert plan is not None
    actual_g = round(th.ivig_dose_g_per_kg * plan.actual_kg)
    adj = ""
    if f.adjusted_weight is not None and f.ibw is not None:
        adj = (f", adjusted {fmt(f.adjusted_weight)} kg ({fmt(round(th.ivig_dose_g_per_kg * f.adjusted_weight))} g "
               f"per course; IBW {fmt(f.ibw)} kg by Devine, BMI {fmt(f.bmi)})")
    elif f.bmi is not None and f.bmi >= th.adjusted_weight_bmi:
        adj = f"; BMI {fmt(f.bmi)} but the adjusted weight needs the patient's sex"
    elif f.height is None:
        adj = "; no height recorded, so BMI and adjusted weight could not be computed"
    problems: list[str] = []
    sentences: list[str] = []
    for o in orders:
        fig = _ordered_figures(o, f, th)
        problems += fig["problems"]
        if fig["sentence"]:
            sentences.append(fig["sentence"])
        if o.ig_route_assumed:
            sentences.append(f"Route of {o.label} not stated: assumed intravenous.")
    if f.weight_stated:
        sentences.append("The weight is patient-stated (LOINC 3142-7), not measured.")
    values = {
        "course_g": fmt(plan.course_g), "basis": plan.basis, "dw_kg": fmt(plan.dosing_kg),
        "actual_kg": fmt(plan.actual_kg), "actual_g": fmt(actual_g), "adjusted_sentence": adj,
        "split5": fmt(round(plan.course_g / 5, 1)), "split2": fmt(round(plan.course_g / 2, 1)),
        "ordered_sentence": " ".join(sentences) or "The order carries no dose to check.",
        "problem_list": problems,
    }
    return [Fired("ivig.dose", facts=_weight_facts(f) + [o.fact() for o in orders], values=values,
                  variant="warning" if problems else None)]


def rule_ivig_heart_failure(ctx: Context) -> list[Fired]:
    orders = _ig_context(ctx)
    f, th = ctx.facts, ctx.th
    if not orders or not f.heart_failure:
        return []
    course_g = days = None
    basis = ""
    for o in orders:
        fig = _ordered_figures(o, f, th)
        if "course_g" in fig:
            course_g, days = fig["course_g"], fig["days"]
            basis = f"Volume computed from the order ({o.label})."
            break
    if course_g is None:
        plan = ivig_plan(f, th)
        if plan is not None:
            course_g, days = plan.course_g, plan.days
            basis = (f"Volume computed for {fmt(th.ivig_dose_g_per_kg)} g/kg x {fmt(plan.dosing_kg)} kg "
                     f"({plan.basis} weight) over {plan.days} days.")
    facts = [x.fact() for x in f.heart_failure] + [o.fact() for o in orders]
    if course_g is None or not days:
        return [Fired("ivig.safety.heart-failure-volume", facts=facts,
                      values={"course_g": "?", "volume_ml": "?", "daily_ml": "?", "days": "?", "daily_flag": "",
                              "dose_basis": "No weight or ordered dose was available to compute the volume."})]
    ml_per_g = 100 / th.ivig_concentration_percent
    volume = course_g * ml_per_g
    daily = volume / days
    return [Fired("ivig.safety.heart-failure-volume", facts=facts + _weight_facts(f),
                  values={"course_g": fmt(round(course_g)), "volume_ml": fmt(round(volume)),
                          "daily_ml": fmt(round(daily)), "days": fmt(days), "dose_basis": basis,
                          "daily_flag": (f", above the {fmt(th.hf_daily_volume_ml)} mL/day that this service flags"
                                         if daily > th.hf_daily_volume_ml else "")})]


RULES: tuple[Callable[[Context], list[Fired]], ...] = (
    rule_mtx_frequency,
    rule_stage,
    rule_ivig_indications,
    rule_ivig_renal,
    rule_ivig_thrombosis,
    rule_ivig_hyperviscosity,
    rule_ivig_iga,
    rule_ivig_heart_failure,
    rule_ivig_dose,
)


# The rule ids each rule function can fire: a function whose ids are all switched off is not run.
RULE_FUNCTION_IDS: dict[Callable[[Context], list[Fired]], tuple[str, ...]] = {
    rule_mtx_frequency: ("ladder.mtx-frequency",),
    rule_stage: tuple(STAGE_RULES.values()),
    rule_ivig_indications: tuple(r for r in RULE_IDS if r.startswith("ivig.indication.")),
    rule_ivig_renal: ("ivig.safety.renal", "ivig.safety.renal-baseline-missing"),
    rule_ivig_thrombosis: ("ivig.safety.thrombosis",),
    rule_ivig_hyperviscosity: ("ivig.safety.hyperviscosity",),
    rule_ivig_iga: ("ivig.safety.iga", "ivig.safety.prior-reaction"),
    rule_ivig_heart_failure: ("ivig.safety.heart-failure-volume",),
    rule_ivig_dose: ("ivig.dose", "ivig.dose.weight-missing"),
}


def run_rules(facts: Facts, stage: StageResult, hook: str, th: Thresholds,
              rules_off: frozenset[str] = frozenset()) -> list[Fired]:
    """Every rule's firings; rules in ``rules_off`` (a site's ``off`` setting) are neither run nor fired."""
    ctx = Context(facts, stage, hook, th)
    out: list[Fired] = []
    for rule in RULES:
        if rules_off and rules_off.issuperset(RULE_FUNCTION_IDS[rule]):
            continue
        out.extend(rule(ctx))
    if rules_off:
        out = [f for f in out if f.rule_id not in rules_off]
    return out


__all__ = ["RULE_FUNCTION_IDS", "RULE_IDS", "Fired", "run_rules", "ivig_plan", "IG"]
