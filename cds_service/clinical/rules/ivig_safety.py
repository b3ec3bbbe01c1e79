"""IVIG safety rules (decision 2: every immune globulin order, SCIG included, on the order hooks):
renal (decision 8), thrombosis (decision 9), hyperviscosity, IgA and prior reactions (decision 10),
heart failure and volume (decision 12)."""

from __future__ import annotations

from ..facts import Facts, fmt
from .context import Context, Fired, ivig_plan, phrase, unique, weight_facts
from .dose import ordered_figures


def renal(ctx: Context) -> Fired | None:
    """Decision 8: a renal risk factor (critical: eGFR below the critical threshold, CKD 4-5, dialysis, AKI)."""
    orders = ctx.ig_orders()
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
    orders = ctx.ig_orders()
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
    """Decision 9: any thrombosis risk factor; high risk with a prior thrombosis, thrombophilia, or the
    number of factors in the thresholds."""
    orders = ctx.ig_orders()
    f, th = ctx.facts, ctx.th
    if not orders or not f.thrombosis_factors:
        return None
    g = "ivig.safety.thrombosis"
    n = f.thrombosis_factor_count
    limit = th.thrombosis_high_risk_factor_count
    high = f.thrombosis_high_risk or n >= limit
    why = []
    if any(x.key == "history" for x in f.thrombosis_factors):
        why.append(phrase(g, "why_history"))
    if any(x.key == "hypercoagulable" for x in f.thrombosis_factors):
        why.append(phrase(g, "why_thrombophilia"))
    if n >= limit:
        why.append(phrase(g, "why_count", n=n, threshold=limit))
    sentence = phrase(g, "high", why=", ".join(why)) if high else phrase(g, "not_high", n=n, threshold=limit)
    return Fired(g, facts=[x.fact() for x in f.thrombosis_factors] + [o.fact() for o in orders],
                 values={"factor_list": thrombosis_labels(f), "n_factors": n, "risk_sentence": sentence},
                 variant="high" if high else None)


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


def iga_deficiency(ctx: Context) -> Fired | None:
    """Decision 10: IgA deficiency (critical with anti-IgA antibodies or a prior reaction)."""
    orders = ctx.ig_orders()
    f = ctx.facts
    if not orders or not f.iga_deficiency:
        return None
    return Fired("ivig.safety.iga", facts=f.iga_deficiency + f.anti_iga + f.prior_ig_reaction
                 + [o.fact() for o in orders], variant="critical" if f.anti_iga or f.prior_ig_reaction else None)


def prior_reaction(ctx: Context) -> Fired | None:
    """Decision 10: a prior reaction to immune globulin without IgA deficiency (critical when severe)."""
    orders = ctx.ig_orders()
    f = ctx.facts
    if not orders or f.iga_deficiency or not f.prior_ig_reaction:
        return None
    return Fired("ivig.safety.prior-reaction", facts=f.prior_ig_reaction + [o.fact() for o in orders],
                 variant="critical" if f.prior_ig_reaction_severe else None)


def heart_failure_volume(ctx: Context) -> Fired | None:
    """Decision 12: heart failure: the volume of the course, from the order or the dose plan."""
    orders = ctx.ig_orders()
    f, th = ctx.facts, ctx.th
    if not orders or not f.heart_failure:
        return None
    g = "ivig.safety.heart-failure-volume"
    course_g = days = None
    basis = ""
    for o in orders:
        fig = ordered_figures(o, f, th)
        if "course_g" in fig:
            course_g, days = fig["course_g"], fig["days"]
            basis = phrase(g, "from_order", order=o.label)
            break
    if course_g is None:
        plan = ivig_plan(f, th)
        if plan is not None:
            course_g, days = plan.course_g, plan.days
            basis = phrase(g, "from_weight", g_per_kg=fmt(th.ivig_dose_g_per_kg), kg=fmt(plan.dosing_kg),
                           basis=plan.basis, days=plan.days)
    facts = [x.fact() for x in f.heart_failure] + [o.fact() for o in orders]
    if course_g is None or not days:
        return Fired(g, facts=facts, values={"course_g": "?", "volume_ml": "?", "daily_ml": "?", "days": "?",
                                             "daily_flag": "", "dose_basis": phrase(g, "no_volume")})
    volume = course_g * (100 / th.ivig_concentration_percent)
    daily = volume / days
    return Fired(g, facts=facts + weight_facts(f),
                 values={"course_g": fmt(round(course_g)), "volume_ml": fmt(round(volume)),
                         "daily_ml": fmt(round(daily)), "days": fmt(days), "dose_basis": basis,
                         "daily_flag": (phrase(g, "daily_flag", limit=fmt(th.hf_daily_volume_ml))
                                        if daily > th.hf_daily_volume_ml else "")})
