"""IVIG safety rules (decision 2: every immune globulin order, SCIG included, on the order hooks):
renal (decision 8), thrombosis (decisions 9 and 38), hyperviscosity, IgA and earlier reactions (decisions 10
and 37), heart failure and volume (decisions 12 and 34). The renal and volume cards are intravenous content:
subcutaneous and intramuscular orders get only what every immune globulin label says (decision 36)."""

from __future__ import annotations

from .. import immune_globulin as ig
from ..facts import Facts, fmt
from .context import Context, Fired, ivig_plan, phrase, unique
from .dose import course_of, iv_orders


def renal(ctx: Context) -> Fired | None:
    """Decision 8: a renal risk factor (critical: eGFR below the critical threshold, CKD 4-5, dialysis, AKI)."""
    orders = iv_orders(ctx)
    f = ctx.facts
    if not orders or not (f.renal_critical or f.renal_factors):
        return None
    factors = f.renal_critical + f.renal_factors
    labels = unique([f"eGFR {fmt(f.egfr.value)}" if x.key == "egfr" and f.egfr else x.name for x in factors])
    facts = [x.fact() for x in factors]
    if f.egfr is not None and not any(x.key == "egfr" for x in factors):
        facts.append(f.egfr.fact())
    if f.creatinine is not None:
        facts.append(f.creatinine.fact())
    return Fired("ivig.safety.renal", facts=facts + [o.fact() for o in orders], values={"factor_list": labels},
                 variant="critical" if f.renal_critical else None)


def renal_baseline_missing(ctx: Context) -> Fired | None:
    """Decision 8: no creatinine or eGFR to compare against (results in unusable units are named). With a
    creatinine but no eGFR that applies (a child without a height, decision 30) the card says why and
    proposes no order."""
    orders = iv_orders(ctx)
    f = ctx.facts
    if not orders or f.egfr is not None or (f.creatinine is not None and not f.egfr_note):
        return None
    probs = [p for p in f.unit_problems if "creatinine" in p.lower() or "egfr" in p.lower()]
    values = {"unit_note": phrase("ivig.safety.renal-baseline-missing", "unit_note",
                                  problems="; ".join(probs)) if probs else ""}
    if f.creatinine is not None:
        return Fired("ivig.safety.renal-baseline-missing", facts=[f.creatinine.fact()] + [o.fact() for o in orders],
                     values={**values, "egfr_note": f.egfr_note}, variant="no_egfr")
    return Fired("ivig.safety.renal-baseline-missing", facts=[o.fact() for o in orders], values=values,
                 suggestions=["creatinine", "bun"])


def thrombosis(ctx: Context) -> Fired | None:
    """Decisions 9 and 38: any thrombosis risk factor; high risk with a thrombosis (active or prior),
    thrombophilia, or the number of factors in the thresholds. An active thrombosis is called active; a
    patient on a treatment dose of an anticoagulant is told so and given no prophylaxis advice."""
    orders = ctx.ig_orders()
    f, th = ctx.facts, ctx.th
    if not orders or not f.thrombosis_factors:
        return None
    g = "ivig.safety.thrombosis"
    n = f.thrombosis_factor_count
    limit = th.thrombosis_high_risk_factor_count
    high = f.thrombosis_high_risk or n >= limit
    keys = {x.key for x in f.thrombosis_factors}
    why = [phrase(g, name) for key, name in (("active", "why_active"), ("history", "why_history"),
                                              ("hypercoagulable", "why_thrombophilia")) if key in keys]
    if n >= limit:
        why.append(phrase(g, "why_count", n=n, threshold=limit))
    sentence = phrase(g, "high", why=", ".join(why)) if high else phrase(g, "not_high", n=n, threshold=limit)
    active, treated = "active" in keys, f.anticoagulated
    variant = ("active-anticoagulated" if active and treated else "anticoagulated" if treated else
               "active" if active else "high" if high else None)
    drugs = unique([fr.fact.split("(", 1)[-1].rstrip(")") for fr in treated])
    return Fired(g, facts=[x.fact() for x in f.thrombosis_factors] + [fr for fr, _ in f.anticoagulants]
                 + [o.fact() for o in orders],
                 values={"factor_list": thrombosis_labels(f), "n_factors": n, "risk_sentence": sentence,
                         "anticoagulant": ", ".join(drugs), "prophylaxis_sentence": prophylaxis_sentence(f, active)},
                 variant=variant)


def prophylaxis_sentence(f: Facts, active: bool) -> str:
    """Decision 38: no prophylaxis advice to a patient on a treatment dose; an active thrombosis is a question
    of its treatment, not of prophylaxis."""
    g = "ivig.safety.thrombosis"
    treated = [fr.value for fr, treats in f.anticoagulants if treats]
    if treated:
        return phrase(g, "anticoagulated", drugs="; ".join(treated))
    other = [fr.value for fr, _ in f.anticoagulants]
    if active:
        return phrase(g, "active_untreated", recorded=phrase(g, "recorded", drugs="; ".join(other)) if other else "")
    if other:
        return phrase(g, "other_anticoagulant", drugs="; ".join(other)) + " " + phrase(g, "prophylaxis")
    return phrase(g, "prophylaxis")


def thrombosis_labels(f: Facts) -> list[str]:
    """The factors as named in the summary, each finding once: an obesity Condition and the obesity the
    measured BMI shows are one finding, said with its number ("obesity (BMI 40.4)"); both stay cited."""
    names = [f"age {f.age}" if x.key == "age" else x.name for x in f.thrombosis_factors]
    measured = f"obesity (BMI {fmt(f.bmi)})" if f.bmi is not None else None  # as facts.derived names it
    if measured in names:
        names = [n for n in names if n == measured or "obes" not in n.lower()]
    return unique(names)


def hyperviscosity(ctx: Context) -> Fired | None:
    """A hyperviscosity risk (paraprotein, viscosity above range, other causes)."""
    orders = ctx.ig_orders()
    f = ctx.facts
    if not orders or not f.hyperviscosity:
        return None
    return Fired("ivig.safety.hyperviscosity", facts=[x.fact() for x in f.hyperviscosity] + [o.fact() for o in orders],
                 values={"factor_list": unique([x.name for x in f.hyperviscosity])})


def reaction_note(f: Facts) -> str:
    """Decision 37: earlier reactions that were not serious, or whose severity is not recorded, listed."""
    g = "ivig.safety.iga"
    parts = []
    if f.prior_ig_reaction_mild:
        parts.append(phrase(g, "mild", reactions="; ".join(fr.value for fr in f.prior_ig_reaction_mild)))
    if f.prior_ig_reaction_unknown:
        parts.append(phrase(g, "unknown", reactions="; ".join(fr.value for fr in f.prior_ig_reaction_unknown)))
    return " ".join(parts)


def iga_deficiency(ctx: Context) -> Fired | None:
    """Decisions 10, 37 and 42: IgA deficiency; critical with anti-IgA antibodies or a serious earlier reaction.
    The label's IgA contraindication is named only when both are recorded; a serious reaction alone is the
    label's contraindication for severe hypersensitivity; antibodies alone are a risk."""
    orders = ctx.ig_orders()
    f = ctx.facts
    if not orders or not f.iga_deficiency:
        return None
    antibodies, serious = bool(f.anti_iga), f.prior_ig_reaction_severe
    variant = ("critical" if antibodies and serious else "critical-antibodies" if antibodies else
               "critical-reaction" if serious else None)
    return Fired("ivig.safety.iga", facts=f.iga_deficiency + f.anti_iga + f.prior_ig_reaction
                 + [o.fact() for o in orders], variant=variant, values={"reaction_note": reaction_note(f)})


def prior_reaction(ctx: Context) -> Fired | None:
    """Decisions 10 and 37: an earlier reaction to immune globulin without IgA deficiency (critical when
    serious: anaphylaxis, a fall in blood pressure, angioedema, bronchospasm)."""
    orders = ctx.ig_orders()
    f = ctx.facts
    if not orders or f.iga_deficiency or not f.prior_ig_reaction:
        return None
    return Fired("ivig.safety.prior-reaction", facts=f.prior_ig_reaction + [o.fact() for o in orders],
                 variant="critical" if f.prior_ig_reaction_severe else None, values={"reaction_note": reaction_note(f)})


def heart_failure_volume(ctx: Context) -> Fired | None:
    """Decisions 12 and 34: heart failure: the volume of the course at each product's own concentration, from
    the orders (one course, decision 35) or, failing them, the dose plan."""
    orders = iv_orders(ctx)
    f, th = ctx.facts, ctx.th
    if not orders or not f.heart_failure:
        return None
    g = "ivig.safety.heart-failure-volume"
    concs = [o.ig_order.concentration for o in orders if o.ig_order is not None]
    conc = concs[0] if concs else ig.Concentration((th.ivig_concentration_percent,), "assumed")
    shared = {"percent": fmt(conc.for_volume), "concentration_note": " ".join(unique([c.sentence() for c in concs]))}
    course = course_of(orders, f)
    plan = ctx.once("ivig-plan", lambda c: ivig_plan(c.facts, c.th))
    facts = [x.fact() for x in f.heart_failure] + [o.fact() for o in orders]
    if course.volume_ml is not None and course.total_g is not None and course.days:
        course_g, volume, days = course.total_g, course.volume_ml, course.days
        daily = course.max_daily_ml or volume / days
        named = ", ".join(o.label for o in orders)
        basis = phrase(g, "from_orders" if len(orders) > 1 else "from_order", order=named)
    elif plan is not None:
        course_g, days = plan.course_g, plan.days
        volume = conc.volume_ml(course_g)
        daily = volume / days
        basis = phrase(g, "from_weight", g_per_kg=fmt(th.ivig_dose_g_per_kg), kg=fmt(plan.dosing_kg),
                       basis=plan.basis, days=plan.days)
    else:
        return Fired(g, facts=facts, values={"course_g": "?", "volume_ml": "?", "daily_ml": "?", "days": "?",
                                             "daily_flag": "", "dose_basis": phrase(g, "no_volume"), **shared})
    lines = [ln for o in orders if o.ig_order is not None for ln in o.ig_order.lines]
    ordered_ml = bool(lines) and all(ln.ml is not None for ln in lines) and course.volume_ml is not None
    return Fired(g, facts=facts + ctx.weight_facts(),
                 values={"course_g": fmt(round(course_g)), "volume_ml": fmt(round(volume)),
                         "daily_ml": fmt(round(daily)), "days": fmt(days), "dose_basis": basis, **shared,
                         "daily_flag": (phrase(g, "daily_flag", limit=fmt(th.hf_daily_volume_ml))
                                        if daily > th.hf_daily_volume_ml else "")},
                 # millilitres written in the order are the volume, whatever the product's concentration
                 variant="ordered_ml" if ordered_ml else None)

