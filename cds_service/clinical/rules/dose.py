"""IVIG dose rules (decision 11): the course for the dosing weight, and what the drafts order, read as one
course (decision 35) at each product's own concentration (decision 34). Intravenous adult orders only: a
subcutaneous or intramuscular product, or a child, gets the safety cards and not this card (decision 36)."""

from __future__ import annotations

import re
from datetime import date

from .. import immune_globulin as ig
from ..facts import FactRef, Facts, PlannedOrder, fmt
from ..memo import lru
from ..thresholds import Thresholds
from .context import Context, Fired, ivig_plan, phrase

G = "ivig.dose"
_MENINGEAL_RE = re.compile(r"mening", re.IGNORECASE)
_NOT_MENINGEAL_RE = re.compile(r"\b(no|without|not)\b[^.;]*mening|mening\w*[^.;]*\b(excluded|ruled out|absent)\b",
                               re.IGNORECASE)


def iv_orders(ctx: Context) -> list[PlannedOrder]:
    """The intravenous immune globulin orders, in the order they are given (first day, then reference), whatever
    order the EHR sent them in; found once per evaluation (five rules ask), a copy for each rule."""
    return list(ctx.once("iv-orders", _iv_orders))


def _iv_orders(ctx: Context) -> list[PlannedOrder]:
    orders = [o for o in ctx.ig_orders() if o.ig_kind == ig.INTRAVENOUS]
    return sorted(orders, key=lambda o: (o.ig_order.start if o.ig_order and o.ig_order.start else date.max,
                                         o.reference))


def course_of(orders: list[PlannedOrder], f: Facts) -> ig.Course:
    """Every intravenous draft as one course (decision 35); g/kg doses need the dosing weight."""
    return ig.course_of([o.ig_order for o in orders if o.ig_order is not None], f.dosing_weight or 0.0)


def _adult(f: Facts, th: Thresholds) -> bool:
    """The 2 g/kg neurosarcoidosis course is an adult regimen: no dose card for a child (decision 36)."""
    return f.age is None or f.age >= th.adult_age_years


def _order_words(o: PlannedOrder, dw: float) -> str:
    """One order as the card names it: each dose line with its days and first day."""
    io = o.ig_order
    steps = []
    for ln in io.lines if io is not None else ():
        daily = ln.daily_grams(dw)
        if daily is None:
            amount = phrase(G, "step_unread")
        elif ln.ml is not None:
            amount = phrase(G, "step_ml", ml=fmt(ln.ml * ln.per_day), grams=fmt(daily))
        else:
            amount = phrase(G, "step_g", grams=fmt(daily))
        days = phrase(G, "step_days", days=fmt(ln.days)) if ln.days is not None else phrase(G, "step_no_days")
        start = phrase(G, "step_from", start=ln.start.isoformat()) if ln.start else ""
        steps.append(amount + days + start)
    return phrase(G, "order", order=o.label, steps=", then ".join(steps) or phrase(G, "step_unread"))


def ordered_figures(orders: list[PlannedOrder], f: Facts, th: Thresholds) -> tuple[list[str], str]:
    """The problems (above the maxima, too few days) and the sentence for the drafts read as one course."""
    assert f.dosing_weight is not None and f.weight is not None
    dw, aw = f.dosing_weight, f.weight.value
    course = course_of(orders, f)
    named = "; ".join(_order_words(o, dw) for o in orders)
    head = phrase(G, "one_course", n=len(orders), orders=named) if len(orders) > 1 else phrase(G, "one_order",
                                                                                                orders=named)
    if course.max_daily_g is None:
        return [], f"{head} {phrase(G, 'dose_unread')}"
    problems: list[str] = []
    daily_gpk = course.max_daily_g / dw
    if course.total_g is not None and course.days:
        gpk = course.total_g / dw
        text = phrase(G, "total", total_g=fmt(course.total_g), gpk=fmt(gpk, 2), basis=f.dosing_weight_basis,
                      by_actual=phrase(G, "by_actual", gpk=fmt(course.total_g / aw, 2)) if dw != aw else "",
                      days=fmt(course.days), max_daily_g=fmt(course.max_daily_g), daily_gpk=fmt(daily_gpk, 2),
                      longer=phrase(G, "longer", max_days=th.ivig_max_days) if course.days > th.ivig_max_days else "")
        if gpk > th.ivig_max_course_g_per_kg + 1e-9:
            problems.append(phrase(G, "course_above", course_gpk=fmt(gpk, 2), limit=fmt(th.ivig_max_course_g_per_kg)))
        if course.days < th.ivig_min_days:
            problems.append(phrase(G, "too_few_days", days=fmt(course.days), min_days=th.ivig_min_days))
    else:
        text = phrase(G, "no_total", max_daily_g=fmt(course.max_daily_g), daily_gpk=fmt(daily_gpk, 2),
                      orders=", ".join(course.unread))
    if daily_gpk > th.ivig_max_daily_g_per_kg + 1e-9:
        problems.append(phrase(G, "daily_above", daily_gpk=fmt(daily_gpk, 2), limit=fmt(th.ivig_max_daily_g_per_kg)))
    return problems, f"{head} {text}"


def meningeal(f: Facts) -> list[FactRef]:
    """Decision 41: neurosarcoidosis of the meninges (a coded sarcoid meningitis, or a neurosarcoidosis
    Condition whose text says so without denying it)."""
    return [c.fact() for c in f.ns_conditions if c.kind == "meningitis" or names_meninges(c.label)]


@lru(maxsize=1024)
def names_meninges(label: str) -> bool:
    """A Condition's text names the meninges and does not deny it (the same texts come back with each call
    about a patient; the two case-insensitive searches cost more than the rest of the dose card)."""
    return bool(_MENINGEAL_RE.search(label)) and not _NOT_MENINGEAL_RE.search(label)


def weight_missing(ctx: Context) -> Fired | None:
    """No usable body weight: the dose cannot be computed (weights in unusable units are named)."""
    orders = iv_orders(ctx)
    f = ctx.facts
    if not orders or not _adult(f, ctx.th) or (f.weight is not None and f.dosing_weight is not None):
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


def _notes(orders: list[PlannedOrder], f: Facts) -> list[str]:
    """What the card adds about the orders: what could not be read, the concentration of orders in mL, an
    assumed route, a patient-stated weight."""
    out = []
    for o in orders:
        io = o.ig_order
        if io is not None and io.problems:
            out.append(phrase(G, "order_problems", order=o.label, problems="; ".join(io.problems)))
        if io is not None and any(ln.ml is not None for ln in io.lines):
            out.append(io.concentration.sentence())
        if o.ig_route_assumed:
            out.append(phrase(G, "route_assumed", order=o.label))
    if f.weight_stated:
        out.append(phrase(G, "weight_stated"))
    return out


def dose(ctx: Context) -> Fired | None:
    """Decisions 11, 35, 36 and 41: the course for the dosing weight; every draft checked as one course
    (warning on a problem); the labelled adverse effects, and aseptic meningitis as a relapse mimic when the
    neurosarcoidosis involves the meninges."""
    orders = iv_orders(ctx)
    f, th = ctx.facts, ctx.th
    if not orders or not _adult(f, th) or f.weight is None or f.dosing_weight is None:
        return None
    plan = ctx.once("ivig-plan", lambda c: ivig_plan(c.facts, c.th))
    assert plan is not None
    problems, sentence = ordered_figures(orders, f, th)
    meninges = meningeal(f)
    values = {
        "course_g": fmt(plan.course_g), "basis": plan.basis, "dw_kg": fmt(plan.dosing_kg),
        "actual_kg": fmt(plan.actual_kg), "actual_g": fmt(round(th.ivig_dose_g_per_kg * plan.actual_kg)),
        "adjusted_sentence": _adjusted_sentence(f, th),
        "split5": fmt(round(plan.course_g / 5, 1)), "split2": fmt(round(plan.course_g / 2, 1)),
        "ordered_sentence": " ".join([sentence, *_notes(orders, f)]),
        "problem_list": problems,
        "meningeal_note": phrase(G, "meningeal") if meninges else "",
    }
    return Fired(G, facts=ctx.weight_facts() + meninges + [o.fact() for o in orders], values=values,
                 variant="warning" if problems else None)
