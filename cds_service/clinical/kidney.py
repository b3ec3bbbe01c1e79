"""Kidney function for the IVIG renal card: which eGFR to believe (decision 30).

The policy, in the order it is applied:

1. Only the most recent blood draw counts: the newest time at which an eGFR or a creatinine was drawn.
2. Patients under 18: the bedside Schwartz equation (0.413 x height in cm / creatinine in mg/dL) from the
   creatinine of that draw, when a height is on record; without a height there is no eGFR, and the reason
   (the adult equations are not valid in children) is given instead. A reported eGFR, which laboratories
   compute with an adult equation, is not used for a child.
3. Adults: a reported race-free CKD-EPI 2021 result of that draw; else CKD-EPI 2021 calculated from the
   creatinine of that draw; else another reported eGFR of that draw that is not adjusted for race.
   A result adjusted for race ("among blacks", LOINC 88293-6 and 48643-1) is never used.
4. Several candidates of the same kind at one time: the lowest (a duplicated or re-sent result must not
   make the answer depend on the order of a Bundle).

The method of a reported eGFR (race-free 2021, race-adjusted, other) comes from the value sets
``egfr.ckd-epi-2021`` and ``egfr.race-adjusted`` in ``cds_service/data/terminology.json``; the reader passes
it in. Every function here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

RACE_FREE_2021 = "ckd-epi-2021"
RACE_ADJUSTED = "race-adjusted"
OTHER = "other"

SCHWARTZ_K = 0.413  # bedside Schwartz constant (IDMS-traceable creatinine)


def ckd_epi_2021(creatinine_mg_dl: float, age: int, sex: str) -> float | None:
    """CKD-EPI 2021 creatinine equation (race-free), mL/min/1.73 m2; None when it does not apply
    (sex other than male/female, age under 18, creatinine not positive)."""
    if sex not in ("male", "female") or age < 18 or creatinine_mg_dl <= 0:
        return None
    k, a = (0.7, -0.241) if sex == "female" else (0.9, -0.302)
    ratio = creatinine_mg_dl / k
    egfr = 142 * min(ratio, 1) ** a * max(ratio, 1) ** -1.200 * 0.9938 ** age
    return egfr * 1.012 if sex == "female" else egfr


def bedside_schwartz(height_cm: float, creatinine_mg_dl: float) -> float | None:
    """Bedside Schwartz equation for children, mL/min/1.73 m2; None without a positive height and creatinine."""
    if height_cm <= 0 or creatinine_mg_dl <= 0:
        return None
    return SCHWARTZ_K * height_cm / creatinine_mg_dl


@dataclass(frozen=True, slots=True)
class Result:
    """One reported eGFR or creatinine: value in mL/min/1.73 m2 or mg/dL, as the converter gave it."""

    value: float
    when: datetime | None
    reference: str | None
    method: str = OTHER  # eGFR only: RACE_FREE_2021, RACE_ADJUSTED or OTHER
    comparator: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The eGFR the renal card uses, or the reason there is none.

    ``basis`` says how it was obtained: ``reported-2021``, ``computed-2021`` (from ``creatinine``),
    ``reported-other``, ``schwartz`` (from ``creatinine`` and the height), or ``none`` with ``explanation``.
    ``refused`` lists the references of race-adjusted results that were left out.
    """

    value: float | None
    basis: str
    when: datetime | None
    reference: str | None
    creatinine: Result | None = None
    comparator: str | None = None
    explanation: str = ""
    refused: tuple[str, ...] = ()


def _draw_time(r: Result) -> datetime | None:
    return r.when.replace(second=0, microsecond=0) if r.when else None


def _lowest(results: Iterable[Result]) -> Result | None:
    """The lowest result; between equal values the one with the smaller reference (order-free)."""
    return min(results, key=lambda r: (r.value, r.reference or ""), default=None)


def latest_draw(egfrs: Sequence[Result], creatinines: Sequence[Result]) -> datetime | None:
    """The newest draw time (to the minute) among usable results; None when nothing is dated."""
    times = [_draw_time(r) for r in (*egfrs, *creatinines) if r.method != RACE_ADJUSTED]
    dated = [t for t in times if t is not None]
    return max(dated, default=None)


def choose_egfr(egfrs: Sequence[Result], creatinines: Sequence[Result], *, age: int | None, sex: str | None,
                height_cm: float | None) -> Choice | None:
    """The eGFR to use from the results of the recency window (decision 30); None when there is none at all.

    ``egfrs`` and ``creatinines`` are the dated results inside the window the caller chose.
    """
    refused = tuple(sorted(r.reference or "" for r in egfrs if r.method == RACE_ADJUSTED))
    usable = [r for r in egfrs if r.method != RACE_ADJUSTED]
    t = latest_draw(usable, creatinines)
    if t is None:
        if refused:
            return Choice(None, "none", None, None, explanation="only race-adjusted eGFR results are on record",
                          refused=refused)
        return None
    draw_egfr = [r for r in usable if _draw_time(r) == t]
    draw_creat = _worst_creatinine([r for r in creatinines if _draw_time(r) == t])
    if age is not None and age < 18:
        return _paediatric(draw_creat, t, height_cm, refused)
    reported_2021 = _lowest(r for r in draw_egfr if r.method == RACE_FREE_2021)
    if reported_2021 is not None:
        return Choice(reported_2021.value, "reported-2021", reported_2021.when, reported_2021.reference,
                      comparator=reported_2021.comparator, refused=refused)
    if draw_creat is not None and draw_creat.comparator is None and age is not None and sex is not None:
        computed = ckd_epi_2021(draw_creat.value, age, sex)
        if computed is not None:
            return Choice(float(round(computed)), "computed-2021", draw_creat.when, draw_creat.reference,
                          creatinine=draw_creat, refused=refused)
    other = _lowest(draw_egfr)
    if other is not None:
        return Choice(other.value, "reported-other", other.when, other.reference, comparator=other.comparator,
                      refused=refused)
    return Choice(None, "none", t, draw_creat.reference if draw_creat else None, creatinine=draw_creat,
                  explanation=_no_equation_reason(draw_creat, sex), refused=refused)


def _worst_creatinine(results: Sequence[Result]) -> Result | None:
    """Of several creatinines of one draw, the highest (the worse kidney function); order-free."""
    return max(results, key=lambda r: (r.value, r.reference or ""), default=None)


def _paediatric(creat: Result | None, t: datetime, height_cm: float | None, refused: tuple[str, ...]) -> Choice:
    if creat is None:
        return Choice(None, "none", t, None, explanation=(
            "patient under 18: a laboratory eGFR uses an adult equation, which is not valid in children, "
            "and no creatinine of that draw is on record for the bedside Schwartz equation"), refused=refused)
    if height_cm is None:
        return Choice(None, "none", creat.when, creat.reference, creatinine=creat, explanation=(
            "patient under 18 and no height on record: the adult eGFR equations are not valid in children "
            "and the bedside Schwartz equation needs a height"), refused=refused)
    value = bedside_schwartz(height_cm, creat.value) if creat.comparator is None else None
    if value is None:
        return Choice(None, "none", creat.when, creat.reference, creatinine=creat, explanation=(
            "patient under 18: the creatinine is reported as a bound, so the bedside Schwartz equation "
            "cannot be applied"), refused=refused)
    return Choice(float(round(value)), "schwartz", creat.when, creat.reference, creatinine=creat, refused=refused)


def _no_equation_reason(creat: Result | None, sex: str | None) -> str:
    if creat is None:
        return "no eGFR of the latest draw"
    if creat.comparator is not None:
        return "the creatinine is reported as a bound, so no eGFR can be calculated from it"
    if sex not in ("male", "female"):
        return "CKD-EPI 2021 needs the sex recorded as male or female"
    return "no eGFR could be calculated from the creatinine"


BASIS_LABEL = {
    "reported-2021": "eGFR",
    "computed-2021": "eGFR (computed, CKD-EPI 2021)",
    "reported-other": "eGFR",
    "schwartz": "eGFR (computed, bedside Schwartz)",
}
