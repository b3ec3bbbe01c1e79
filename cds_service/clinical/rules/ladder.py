"""Ladder rules: the stage card (knowledge §4.2, decisions 4-6) and methotrexate recorded daily (A9).

When cards show (decision 6): on patient-view, or when one of "the orders" (the selections on
order-select, every draft on order-sign) is a ladder drug or an immune globulin. An escalation card is
suppressed when any draft order is a drug of the tier it proposes or higher. Possible / suspected
neurosarcoidosis (A16) is folded in as conditional wording ("If NS confirmed: ...").
"""

from __future__ import annotations

from typing import Any

from .. import ladder_steps
from ..facts import Factor, Facts, PlannedOrder, fmt
from ..stages import RUNG_OF, StageResult
from ..terminology import GC
from .context import PATIENT_VIEW, Context, Fired, phrase

S2B = "stage.s2b-gc-subthreshold"


def methotrexate_daily(ctx: Context) -> Fired | None:
    """ladder.mtx-frequency (A9): methotrexate recorded or ordered daily; shown instead of the stage card."""
    s = ctx.stage
    if not s.mtx_daily:
        return None
    daily_draft = any(o.ingredient == "methotrexate" and o.daily_frequency for o in ctx.orders)
    if not daily_draft and not (ctx.ladder_trigger and (ctx.hook == PATIENT_VIEW or ctx.orders)):
        return None
    return Fired("ladder.mtx-frequency", facts=list(s.mtx_daily))


def stage_card(ctx: Context) -> Fired | None:
    """The card of the patient's rung (decision 5), unless its escalation is already ordered (decision 6)."""
    return ctx.once("stage-card", _stage_card)


def _stage_card(ctx: Context) -> Fired | None:
    s = ctx.stage
    if s.mtx_daily or not s.in_scope or not ctx.ladder_trigger:
        return None
    draft = _subthreshold_gc_draft(ctx)
    if draft is not None:
        return draft
    rung = RUNG_OF.get(s.stage)
    if rung is None or rung.rule_id is None:
        return None
    if rung.proposes_tier is not None and ctx.max_planned_tier >= rung.proposes_tier:
        return None  # decision 6: the escalation is already being ordered
    fired = Fired(rung.rule_id, facts=list(s.reasons), conditional=s.conditional)
    fired.values["gc_max"] = fmt(s.gc_max_pred_eq)
    _FILL.get(s.stage, _nothing)(ctx, fired)
    return fired


def _subthreshold_gc_draft(ctx: Context) -> Fired | None:
    """S1 / S2b with a draft glucocorticoid order below the first-line dose: the card speaks of the order."""
    f, s, th = ctx.facts, ctx.stage, ctx.th
    if s.stage not in ("S1", "S2b") or any(o.drug_class == GC and o.pulse for o in f.planned_orders):
        return None
    low = [o for o in f.planned_orders if o.drug_class == GC and o.is_ladder and not o.pulse
           and o.pred_eq_mg is not None and o.pred_eq_mg < th.gc_high_dose_mg]
    if not low:
        return None
    o = low[0]
    dose = fmt(o.pred_eq_mg)
    return Fired(S2B, facts=s.reasons + [o.fact()], variant="draft",
                 values={"order_dose": dose, "gc_max": dose,
                         "dose_sentence": phrase(S2B, "draft_dose", order=o.label, dose=dose)},
                 conditional=s.conditional)


def _nothing(ctx: Context, fired: Fired) -> None:
    return None


def _untreated(ctx: Context, fired: Fired) -> None:
    s, v = ctx.stage, fired.values
    fired.variant = "prior_therapy" if s.prior_therapy else None
    v["prednisone_mg"] = fmt(ctx.th.prednisone_suggested_mg_day)
    v["prior_note"] = phrase(fired.rule_id, "prior_note") if s.prior_therapy else ""
    blockers = withheld_by(ctx.facts.contraindications, "prednisone")  # decision 39
    if blockers:
        v["prior_note"] += " " + phrase(fired.rule_id, "gc_withheld", blockers="; ".join(c.label for c in blockers))
        fired.facts += [c.fact("Contraindication: ") for c in blockers]
    fired.suggestions = [] if ctx.facts.ns_text_only or blockers else ["prednisone"]  # decision 47: not from text


def _on_gc(ctx: Context, fired: Fired) -> None:
    fired.values["pulse_note"] = phrase(fired.rule_id, "pulse_note") if ctx.stage.gc_pulse else ""


def _gc_subthreshold(ctx: Context, fired: Fired) -> None:
    s = ctx.stage
    if not s.gc_dose_known:
        fired.variant = "unknown"
        fired.values["dose_sentence"] = phrase(S2B, "unknown_dose")
    else:
        fired.values["dose_sentence"] = phrase(S2B, "highest_dose", dose=fmt(s.gc_max_pred_eq))


def withheld_by(contraindications: list[Factor], drug: str) -> list[Factor]:
    """Decision 39: the recorded contraindications that withhold ``drug`` (criteria/contraindications.yaml)."""
    return [c for c in contraindications if ladder_steps.withholds_drug(c.key, drug)]


def not_tolerated(f: Facts, s: StageResult) -> set[str]:
    """Ingredients stopped for intolerance or recorded as an allergy: ruled out like a contraindication."""
    stopped = {e.ingredient for st in (s.gc, s.second_line, s.anti_tnf) for e in st.exposures
               if e.ingredient and e.stop_reason == "intolerance"}
    return stopped | set(f.drug_allergies)


def next_step_ruled_out(f: Facts, s: StageResult) -> bool:
    """Decision 39: every option of the patient's next standard step is contraindicated or not tolerated."""
    return ladder_steps.next_step_ruled_out(s.stage, {c.key for c in f.contraindications}, not_tolerated(f, s))


def _gc_failed(ctx: Context, fired: Fired) -> None:
    """S3R / S3I: methotrexate proposed, unless a contraindication withholds it."""
    s, v = ctx.stage, fired.values
    v["mtx_mg"] = fmt(ctx.th.mtx_suggested_mg_week)
    v["completed_note"] = (phrase("stage.s3r-gc-refractory", "completed_note") + " "
                           if s.relapse_after_completed_gc else "")
    # S3I won over S3R (decision 50): its card says that disease also continued
    v["also_continued"] = (" " + phrase("stage.s3i-gc-intolerant", "also_continued")
                           if s.stage == "S3I" and s.gc.refractory else "")
    blockers = withheld_by(ctx.facts.contraindications, "methotrexate")
    v["mtx_blockers"] = list(dict.fromkeys(c.label for c in blockers))
    if blockers:
        fired.variant = "mtx_contraindicated"  # the summary names the blocker instead of advising methotrexate
        v["mtx_withheld"] = phrase("stage.s3r-gc-refractory", "mtx_withheld",
                                   blockers="; ".join(c.label for c in blockers))
        v["mtx_prechecks"] = ""
        fired.facts += [c.fact("Contraindication: ") for c in blockers]
    else:
        v["mtx_withheld"] = ""
        v["mtx_prechecks"] = phrase("stage.s3r-gc-refractory", "mtx_prechecks") + "\n"
        fired.suggestions = [] if ctx.facts.ns_text_only else ["methotrexate"]


def _on_second_line(ctx: Context, fired: Fired) -> None:
    s, v, th = ctx.stage, fired.values, ctx.th
    agents = sorted({e.ingredient or e.label for e in s.second_line.current})
    v["agent"] = ", ".join(agents) or "second-line agent"
    v["trial_weeks"] = fmt(th.second_line_min_trial_days / 7)
    v["mmf_note"] = phrase(fired.rule_id, "mmf_note") + " " if "mycophenolate" in agents else ""
    v["subtherapeutic_note"] = phrase(fired.rule_id, "subtherapeutic_note") + " " if s.mtx_subtherapeutic else ""
    v["monitoring_short"], v["monitoring_detail"] = monitoring_for(agents)
    if agents == ["mycophenolate"]:
        fired.variant = "mmf"


def _second_line_failed(ctx: Context, fired: Fired) -> None:
    """S5: infliximab proposed (per kg without a weight), unless a contraindication withholds anti-TNF."""
    f, v, th = ctx.facts, fired.values, ctx.th
    v["trial_weeks"] = fmt(th.second_line_min_trial_days / 7)
    blockers = withheld_by(f.contraindications, "infliximab")
    v["contra_note"] = (phrase(fired.rule_id, "contra_note", blockers="; ".join(c.label for c in blockers)) + " "
                        if blockers else "")
    fired.facts += [c.fact("Contraindication: ") for c in blockers]
    if blockers:
        v["ifx_note"] = phrase(fired.rule_id, "ifx_withheld")
    elif f.ns_text_only:  # decision 47: neurosarcoidosis named only in text never leads to an order
        v["ifx_note"] = phrase(fired.rule_id, "ifx_text_only")
    elif f.weight is None:
        v["ifx_note"] = phrase(fired.rule_id, "ifx_no_weight", days=th.weight_recency_days)
        v["ifx_per_kg"] = fmt(th.infliximab_mg_per_kg)
        fired.suggestions = ["infliximab-per-kg"]
    else:
        v["ifx_note"] = ""
        v["weight_kg"] = fmt(f.weight.value)
        v["ifx_mg"] = fmt(round(th.infliximab_mg_per_kg * f.weight.value))
        fired.suggestions = ["infliximab"]
        fired.facts.append(f.weight.fact())


def monitoring_for(agents: list[str]) -> tuple[str, str]:
    """(summary words, detail sentences) of the monitoring each second-line agent needs (decision 49),
    from ``_phrases.stage.s4-on-second-line.monitoring`` (an agent not listed gets ``default``)."""
    from ..cards import card_library  # the card texts, loaded once (cards imports the rules)

    table = card_library()["_phrases"]["stage.s4-on-second-line"]["monitoring"]
    picked = [table.get(a) or table["default"] for a in agents] or [table["default"]]
    short = "; ".join(dict.fromkeys(p["short"] for p in picked))
    detail = " ".join(dict.fromkeys(p["detail"] for p in picked))
    return short, detail


def skipped_rung(ctx: Context) -> Fired | None:
    """ladder.skipped-rung (decision 27): a second-line or later order for neurosarcoidosis that never had a
    glucocorticoid trial, with none being ordered, names the glucocorticoid rung. Skipping methotrexate for
    an anti-TNF agent is accepted practice (A13) and gets no card."""
    f, s = ctx.facts, ctx.stage
    if ctx.hook == PATIENT_VIEW or not s.in_scope or s.mtx_daily or s.gc.ever or s.gc_tried:
        return None
    skipping = [o for o in ctx.orders if o.is_ladder and (o.tier or 0) >= 2]
    if not skipping or any(o.drug_class == GC and o.is_ladder for o in f.planned_orders):
        return None
    return Fired("ladder.skipped-rung", facts=s.reasons + [skipping[0].fact()],
                 values={"order_label": _drug_name(skipping[0])}, conditional=s.conditional)


def order_contraindicated(ctx: Context) -> Fired | None:
    """ladder.order-contraindicated (decision 39 at the order): a ladder drug being ordered for a patient in
    scope whose recorded contraindications withhold it. The escalation card that would list them is hidden
    once its drug is ordered (decision 6), so this card names them; a pregnancy makes it critical."""
    f = ctx.facts
    if ctx.hook == PATIENT_VIEW or not f.contraindications or not ctx.stage.in_scope:
        return None
    for o in ctx.orders:
        blockers = withheld_by(f.contraindications, o.ingredient) if o.is_ladder and o.ingredient else []
        if blockers:
            labels = list(dict.fromkeys(c.label for c in blockers))
            return Fired("ladder.order-contraindicated",
                         facts=[o.fact()] + [c.fact("Contraindication: ") for c in blockers],
                         values={"order_label": _drug_name(o), "blockers": labels},
                         variant="pregnancy" if any(c.key == "pregnancy" for c in blockers) else None)
    return None


def _drug_name(o: PlannedOrder) -> str:
    return (o.ingredient or o.label).capitalize()


def _on_anti_tnf(ctx: Context, fired: Fired) -> None:
    agents = sorted({e.ingredient or e.label for e in ctx.stage.anti_tnf.current})
    fired.values["agent"] = ", ".join(agents) or "anti-TNF"


_FILL: dict[str, Any] = {"S1": _untreated, "S2": _on_gc, "S2b": _gc_subthreshold, "S3R": _gc_failed,
                         "S3I": _gc_failed, "S4": _on_second_line, "S5": _second_line_failed, "S6": _on_anti_tnf}


