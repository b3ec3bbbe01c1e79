"""IVIG dose rules (decision 11): the course for the dosing weight, and the ordered dose checked
against the daily and course maxima. Dose rules apply to IVIG only (SCIG: safety cards only)."""

from __future__ import annotations

from typing import Any

from ..facts import Facts, PlannedOrder, fmt
from ..thresholds import Thresholds
from .context import Context, Fired, ivig_plan, phrase, weight_facts

G = "ivig.dose"


def _ivig_orders(ctx: Context) -> list[PlannedOrder]:
    return [o for o in ctx.ig_orders() if o.ig_kind == "ivig"]


def ordered_figures(o: PlannedOrder, f: Facts, th: Thresholds) -> dict[str, Any]:
    """Ordered daily/course dose in g and g/kg (dosing and actual weight) for one IVIG order, the
    sentence that says it, and the problems (above the maxima, too few days)."""
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
        out["sentence"] = phrase(G, "dose_unread", problems=f" ({'; '.join(d.problems)})" if d.problems else "")
        return out
    daily_gpk = (d.per_admin_g_per_kg * apd) if d.per_admin_g_per_kg is not None else daily_g / dw
    out["daily_g"] = daily_g
    parts = [phrase(G, "ordered", order=o.label, daily_g=fmt(daily_g), daily_gpk=fmt(daily_gpk, 2))]
    if d.days is not None:
        course_g = daily_g * d.days if len(d.segments) <= 1 else sum(
            ((s[0] if s[0] is not None else (s[1] or 0) * dw) * (s[2] or 1) * (s[3] or 0)) for s in d.segments)
        course_gpk = course_g / dw
        out["course_g"] = course_g
        out["days"] = d.days
        parts.append(phrase(G, "course", days=fmt(d.days), course_g=fmt(course_g), course_gpk=fmt(course_gpk, 2),
                            basis=f.dosing_weight_basis, course_gpk_actual=fmt(course_g / aw, 2)))
        if course_gpk > th.ivig_max_course_g_per_kg + 1e-9:
            out["problems"].append(phrase(G, "course_above", course_gpk=fmt(course_gpk, 2),
                                          limit=fmt(th.ivig_max_course_g_per_kg)))
        if d.days < th.ivig_min_days:
            out["problems"].append(phrase(G, "too_few_days", days=fmt(d.days), min_days=th.ivig_min_days))
        if d.days > th.ivig_max_days:
            parts.append(phrase(G, "longer", max_days=th.ivig_max_days))
    else:
        parts.append(phrase(G, "no_course_length"))
    if daily_gpk > th.ivig_max_daily_g_per_kg + 1e-9:
        out["problems"].append(phrase(G, "daily_above", daily_gpk=fmt(daily_gpk, 2),
                                      limit=fmt(th.ivig_max_daily_g_per_kg)))
    if d.problems:
        parts.append("(" + "; ".join(d.problems) + ")")
    out["sentence"] = " ".join(parts) + "."
    return out


def weight_missing(ctx: Context) -> Fired | None:
    """No usable body weight: the dose cannot be computed (weights in unusable units are named)."""
    orders = _ivig_orders(ctx)
    f = ctx.facts
    if not orders or (f.weight is not None and f.dosing_weight is not None):
        return None
    probs = [p for p in f.unit_problems if "weight" in p.lower()]
    return Fired("ivig.dose.weight-missing", facts=[o.fact() for o in orders],
                 values={"unit_note": phrase("ivig.dose.weight-missing", "unit_note", problems="; ".join(probs))
                         if probs else ""})


def _adjusted_sentence(f: Facts, th: Thresholds) -> str:
    if f.adjusted_weight is not None and f.ibw is not None:
        return phrase(G, "adjusted", adjusted_kg=fmt(f.adjusted_weight),
                      adjusted_g=fmt(round(th.ivig_dose_g_per_kg * f.adjusted_weight)), ibw=fmt(f.ibw), bmi=fmt(f.bmi))
    if f.bmi is not None and f.bmi >= th.adjusted_weight_bmi:
        return phrase(G, "adjusted_needs_sex", bmi=fmt(f.bmi))
    if f.height is None:
        return phrase(G, "no_height")
    return ""


def dose(ctx: Context) -> Fired | None:
    """Decision 11: the course for the dosing weight, and each ordered dose checked (warning on a problem)."""
    orders = _ivig_orders(ctx)
    f, th = ctx.facts, ctx.th
    if not orders or f.weight is None or f.dosing_weight is None:
        return None
    plan = ivig_plan(f, th)
    assert plan is not None
    problems: list[str] = []
    sentences: list[str] = []
    for o in orders:
        fig = ordered_figures(o, f, th)
        problems += fig["problems"]
        if fig["sentence"]:
            sentences.append(fig["sentence"])
        if o.ig_route_assumed:
            sentences.append(phrase(G, "route_assumed", order=o.label))
    if f.weight_stated:
        sentences.append(phrase(G, "weight_stated"))
    values = {
        "course_g": fmt(plan.course_g), "basis": plan.basis, "dw_kg": fmt(plan.dosing_kg),
        "actual_kg": fmt(plan.actual_kg), "actual_g": fmt(round(th.ivig_dose_g_per_kg * plan.actual_kg)),
        "adjusted_sentence": _adjusted_sentence(f, th),
        "split5": fmt(round(plan.course_g / 5, 1)), "split2": fmt(round(plan.course_g / 2, 1)),
        "ordered_sentence": " ".join(sentences) or phrase(G, "no_dose"),
        "problem_list": problems,
    }
    return Fired(G, facts=weight_facts(f) + [o.fact() for o in orders], values=values,
                 variant="warning" if problems else None)
