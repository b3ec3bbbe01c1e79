"""IVIG indication rules (knowledge §4.3, decisions 1 and 7): suggestions, shown with the ladder cards
(decision 6) and never while immune globulin is current (then only safety and monitoring)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .. import immune_globulin as ig
from ..facts import FactRef, Facts
from ..stages import StageResult
from ..terminology import SECOND_LINE
from ..thresholds import Thresholds
from .context import Context, Fired, ivig_values, phrase
from .ladder import next_step_ruled_out

G = "ivig.indication"


def rapid_progression(f: Facts, s: StageResult, th: Thresholds) -> list[FactRef]:
    """New manifestations within the window, a recent IV pulse, an inpatient stay, bulbar involvement."""
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


def best_candidate_features(f: Facts, s: StageResult, th: Thresholds) -> list[str]:
    feats = []
    if rapid_progression(f, s, th):
        feats.append(phrase(G, "rapid_progression"))
    if f.contraindications and next_step_ruled_out(f, s):  # decision 39
        feats.append(phrase(G, "contraindication"))
    if f.sfn or f.conduction_block or any(c.kind == "neuropathy" for c in f.ns_conditions):
        feats.append(phrase(G, "peripheral"))
    if s.stage in ("S5", "S7") or (s.gc.refractory or s.gc_intolerance) and s.second_line.all_failed:
        feats.append(phrase(G, "two_agents"))
    return feats


def _shown(ctx: Context) -> bool:
    """Decision 6, and not while immune globulin is current."""
    return ctx.once("indication-shown", _indication_shown)


def _indication_shown(ctx: Context) -> bool:
    s = ctx.stage
    return ctx.ladder_trigger and (s.in_scope or s.sfn_pathway) and not ctx.facts.current_ig()


def _fire(ctx: Context, rule_id: str, facts: list[FactRef], conditional: bool | None = None,
          **values: Any) -> Fired:
    """The indication card with the IVIG dose plan (and its order) when a weight is known; never an order
    when neurosarcoidosis is named only in text (decision 47). ``conditional``: the stage's "if NS
    confirmed" wording unless the card says otherwise."""
    f, s = ctx.facts, ctx.stage
    base = ctx.once("ivig-values", lambda c: ivig_values(c.facts, c.th))
    feats = ctx.once("best-candidate", lambda c: best_candidate_features(c.facts, c.stage, c.th))
    best = phrase(G, "best_candidate", features=", ".join(feats)) if feats else phrase(G, "no_best_candidate")
    against = ivig_contraindicated(f)
    if against:
        best += " " + phrase(G, "offer_withheld")
        facts = facts + against
    would_offer = bool(base) and not ctx.ivig_planned and not against and not f.ns_text_only
    risky = ivig_high_risk(f) if would_offer else []
    if risky:
        best += " " + phrase(G, "offer_withheld_risk")
        facts = facts + risky
    elif would_offer and f.heart_failure:
        best += " " + phrase(G, "heart_failure")
        facts = facts + [x.fact() for x in f.heart_failure]
    offer = ["ivig"] if would_offer and not risky else []
    v = dict(base)
    v.update(values)
    v["best_candidate"] = best
    return Fired(rule_id, facts=facts + ctx.weight_facts() if offer else facts, values=v, suggestions=list(offer),
                 conditional=s.conditional if conditional is None else conditional)


def ivig_contraindicated(f: Facts) -> list[FactRef]:
    """What the label contraindicates IVIG for (a serious earlier reaction to immune globulin; IgA deficiency
    with anti-IgA antibodies, a risk the card treats alike): no one-click IVIG order then, the card says why."""
    serious = [fr for fr in f.prior_ig_reaction
               if fr not in f.prior_ig_reaction_mild and fr not in f.prior_ig_reaction_unknown]
    antibodies = f.iga_deficiency + f.anti_iga if f.iga_deficiency and f.anti_iga else []
    return (serious if f.prior_ig_reaction_severe else []) + antibodies


def ivig_high_risk(f: Facts) -> list[FactRef]:
    """The boxed warning's two risks at their most serious, severe kidney impairment (eGFR below the critical
    threshold, CKD 4-5, dialysis, AKI) and an active thrombosis: no one-click IVIG order then; an order the
    clinician writes gets the safety cards (decision 2)."""
    return [x.fact() for x in f.renal_critical] + [x.fact() for x in f.thrombosis_factors if x.key == "active"]


def steroid_resistant(ctx: Context) -> Fired | None:
    """Refractory to glucocorticoid (S3R, S5, S7)."""
    s = ctx.stage
    if _shown(ctx) and s.in_scope and s.stage in ("S3R", "S5", "S7"):
        return _fire(ctx, "ivig.indication.steroid-resistant", list(s.reasons))
    return None


def decompensated(ctx: Context) -> Fired | None:
    """Rapid progression while cyclophosphamide is being started (not yet given): IVIG as a bridge."""
    f, s = ctx.facts, ctx.stage
    if not (_shown(ctx) and s.in_scope and f.ns_status == "active"):
        return None
    prog = rapid_progression(f, s, ctx.th)
    cyc_planned = [o for o in f.planned_orders if o.ingredient == "cyclophosphamide"]
    cyc_given = [e for e in f.of_class(SECOND_LINE) if e.ingredient == "cyclophosphamide" and e.exposed]
    if prog and cyc_planned and not cyc_given:
        return _fire(ctx, "ivig.indication.decompensated", prog + [o.fact() for o in cyc_planned],
                     progression=", ".join(sorted({p.fact for p in prog})))
    return None


def small_fiber(ctx: Context) -> Fired | None:
    """Small-fiber neuropathy with sarcoidosis; rests on sarcoidosis plus this finding, not on a confirmed
    NS diagnosis, so never the conditional wording (decision 49)."""
    f = ctx.facts
    if _shown(ctx) and f.sfn and f.has_sarcoidosis:
        return _fire(ctx, "ivig.indication.sfn", [c.fact() for c in f.sfn] + f.sarcoidosis[:1], conditional=False)
    return None


def conduction_block(ctx: Context) -> Fired | None:
    """Conduction block with sarcoidosis; not conditional on an NS diagnosis (decision 49)."""
    f = ctx.facts
    if _shown(ctx) and f.conduction_block and f.has_sarcoidosis:
        return _fire(ctx, "ivig.indication.conduction-block",
                     [c.fact() for c in f.conduction_block] + f.sarcoidosis[:1], conditional=False)
    return None


def immunosuppression_contraindicated(ctx: Context) -> Fired | None:
    """Every option of the patient's next standard step ruled out (decision 39, criteria/ladder_steps.yaml
    and contraindications.yaml); the card names each contraindication and what it affects."""
    f = ctx.facts
    if _shown(ctx) and f.contraindications and ctx.stage.in_scope and next_step_ruled_out(f, ctx.stage):
        labels = list(dict.fromkeys(c.label for c in f.contraindications))
        return _fire(ctx, "ivig.indication.immunosuppression-contraindicated",
                     [c.fact("Contraindication: ") for c in f.contraindications], contra_list=labels)
    return None


def one_ivig_offer(fired: list[Fired]) -> list[Fired]:
    """At most one card of a response offers the IVIG order: the first indication card of the reviewed list
    (``criteria/immune_globulin.yaml``, ``ivig_offer_owner``) that fired; the others keep their text and
    facts. Two one-click orders for the same drug invite a double order."""
    owner = ig.ivig_offer_owner(f.rule_id for f in fired if "ivig" in f.suggestions)
    for f in fired:
        if f.rule_id != owner and "ivig" in f.suggestions:
            f.suggestions = [k for k in f.suggestions if k != "ivig"]
    return fired
