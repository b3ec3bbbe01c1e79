"""Immune globulin orders: product concentration, route, and one course over every draft (decisions 34-36).

Pure functions over FHIR dicts. The product lists a clinician reviews (brands and their strengths, products
given only under the skin or into a muscle, which indication card owns the IVIG suggestion) are data, in
``cds_service/clinical/criteria/immune_globulin.yaml``.

- :func:`concentration_of`: the product's concentration (decision 34), from the Medication's strength, else a
  percentage or mg/mL in the product name, else the brand table, else the site default, with the basis said.
- :func:`administration_kind`: intravenous, subcutaneous or intramuscular (decision 36).
- :func:`read_ig_order`: what one draft asks for, per dosage line, with millilitres turned into grams at the
  product's own concentration.
- :func:`course_of`: every immune globulin draft of a request as one course (decision 35): grams added up,
  days counted on the calendar when the orders are dated, the highest daily amount.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from . import criteria as _criteria
from . import plausibility

INTRAVENOUS, SUBCUTANEOUS, INTRAMUSCULAR = "ivig", "scig", "imig"

# ============================================================================================ criteria


def criteria() -> dict[str, Any]:
    """The reviewed lists of ``criteria/immune_globulin.yaml`` (loaded once)."""
    return _criteria.immune_globulin()


@functools.lru_cache(maxsize=1)
def _brand_patterns() -> tuple[tuple[str, re.Pattern[str], tuple[float, ...]], ...]:
    brands = criteria()["brands"]
    names = sorted(brands, key=len, reverse=True)
    return tuple((n, re.compile(r"(?<![a-z])" + re.escape(n), re.IGNORECASE),
                  tuple(float(p) for p in brands[n])) for n in names)


@functools.lru_cache(maxsize=16)
def _words_pattern(key: str) -> re.Pattern[str]:
    names = criteria().get(key) or []
    return re.compile(r"(?<![a-z])(" + "|".join(re.escape(str(n)) for n in names) + r")", re.IGNORECASE)


# ============================================================================================ concentration


@dataclass(frozen=True, slots=True)
class Concentration:
    """A product's concentration in % w/v (g per 100 mL).

    ``percents`` holds one value, or the strengths a brand is sold at when the record does not say which:
    volumes then use the lowest (the larger volume), millilitres are turned into grams with the highest
    (the larger dose), so an ambiguity never hides a fluid load or an overdose.
    """

    percents: tuple[float, ...]
    basis: str  # strength | name | brand | assumed
    product: str = ""

    @property
    def for_volume(self) -> float:
        return min(self.percents)

    @property
    def for_grams(self) -> float:
        return max(self.percents)

    @property
    def ambiguous(self) -> bool:
        return len(set(self.percents)) > 1

    def volume_ml(self, grams: float) -> float:
        return grams * 100 / self.for_volume

    def grams_of_ml(self, ml: float) -> float:
        return ml * self.for_grams / 100

    def label(self) -> str:
        return " or ".join(f"{_num(p)}%" for p in sorted(set(self.percents)))

    def sentence(self) -> str:
        """How the concentration was found, for the card (decision 34)."""
        if self.basis == "strength":
            return f"Concentration {self.label()} from the product's recorded strength."
        if self.basis == "name":
            return f"Concentration {self.label()} from the product name."
        if self.basis == "brand" and not self.ambiguous:
            return f"Concentration {self.label()} ({self.product.title()})."
        if self.basis == "brand":
            return (f"{self.product.title()} is made at {self.label()} and the record does not say which: volume "
                    f"computed at {_num(self.for_volume)}% (the larger volume), millilitres turned into grams at "
                    f"{_num(self.for_grams)}% (the larger dose). Check the product.")
        return f"Product concentration not recorded: {_num(self.for_volume)}% assumed."


def _num(x: float) -> str:
    return f"{x:g}"


def _plausible(percent: float | None) -> float | None:
    lo, hi = criteria().get("plausible_percent") or (3, 25)
    if percent is None or not math.isfinite(percent) or not lo <= percent <= hi:
        return None
    return round(percent, 2)


_MASS_G = {"g": 1.0, "gm": 1.0, "gram": 1.0, "grams": 1.0, "mg": 0.001, "kg": 1000.0}
_VOLUME_ML = {"ml": 1.0, "milliliter": 1.0, "millilitre": 1.0, "cl": 10.0, "dl": 100.0, "l": 1000.0}


def _unit(q: Any) -> str:
    if not isinstance(q, dict):
        return ""
    return str(q.get("code") or q.get("unit") or "").strip().lower().replace(" ", "")


def _value(q: Any, default: float | None = None) -> float | None:
    if not isinstance(q, dict):
        return default
    v = q.get("value")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def percent_of_ratio(ratio: Any) -> float | None:
    """% w/v of a FHIR Ratio (10 g / 100 mL, 100 mg / 1 mL) or of a Quantity in %, g/dL, mg/mL or g/L."""
    if not isinstance(ratio, dict):
        return None
    if "numerator" not in ratio:  # a Quantity
        v, u = _value(ratio), _unit(ratio)
        if v is None:
            return None
        per = {"%": 1.0, "g/dl": 1.0, "g/100ml": 1.0, "mg/ml": 0.1, "g/l": 0.1}.get(u)
        return _plausible(v * per) if per is not None else None
    num, den = ratio.get("numerator"), ratio.get("denominator")
    nv, dv = _value(num), _value(den, 1.0)
    nu, du = _unit(num), _unit(den) or "ml"
    if nv is None or dv is None or dv <= 0:
        return None
    if nu in ("%", "g/dl", "mg/ml", "g/l") and du in ("1", "ml"):
        return percent_of_ratio({"value": nv / dv, "code": nu})
    if nu not in _MASS_G or du not in _VOLUME_ML:
        return None
    return _plausible(nv * _MASS_G[nu] / (dv * _VOLUME_ML[du]) * 100)


_PERCENT_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*%")
_PER_ML_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|g)\s*/\s*(\d+(?:\.\d+)?)?\s*(ml|l)\b", re.IGNORECASE)


def percent_in_name(text: str) -> float | None:
    """The one concentration a product name states ("10%", "100 mg/mL", "10 g/100 mL"); None if none or
    several different ones."""
    found: set[float] = set()
    for m in _PERCENT_RE.finditer(text or ""):
        p = _plausible(float(m.group(1).replace(",", ".")))
        if p is not None:
            found.add(p)
    for m in _PER_ML_RE.finditer(text or ""):
        amount, unit, per, vol = float(m.group(1)), m.group(2).lower(), m.group(3), m.group(4).lower()
        p = percent_of_ratio({"numerator": {"value": amount, "code": unit},
                              "denominator": {"value": float(per) if per else 1.0, "code": vol}})
        if p is not None:
            found.add(p)
    return found.pop() if len(found) == 1 else None


def brand_in(text: str) -> tuple[str, tuple[float, ...]] | None:
    """The brand named in ``text`` (longest name first) with the strengths it is sold at."""
    for name, rx, percents in _brand_patterns():
        if rx.search(text or ""):
            return name, percents
    return None


def medication_strength(medication: Any) -> float | None:
    """% from a Medication: an ingredient's strength, else the package ``amount`` (both a Ratio)."""
    if not isinstance(medication, dict):
        return None
    for ing in medication.get("ingredient") or ():
        if isinstance(ing, dict):
            p = percent_of_ratio(ing.get("strength"))
            if p is not None:
                return p
    return percent_of_ratio(medication.get("amount"))


def concentration_of(medication: Any, product_text: str, assumed_percent: float) -> Concentration:
    """Decision 34, in its order: strength on the Medication, percentage in the name, brand, else assumed."""
    p = medication_strength(medication)
    if p is not None:
        return Concentration((p,), "strength")
    p = percent_in_name(product_text)
    if p is not None:
        return Concentration((p,), "name")
    hit = brand_in(product_text)
    if hit is not None:
        return Concentration(hit[1], "brand", hit[0])
    return Concentration((float(assumed_percent),), "assumed")


# ============================================================================================ route


_IV_TEXT = re.compile(r"intravenous|\bivig\b|\bigiv\b|\bi\.v\.|\biv\b", re.IGNORECASE)
_SC_TEXT = re.compile(r"subcutaneous|\bsubq\b|\bs\.c\.|\bsc\b|\bsq\b", re.IGNORECASE)
_IM_TEXT = re.compile(r"intramuscular|\bi\.m\.|\bim\b", re.IGNORECASE)


def administration_kind(product_text: str, route_kind: str | None, atc_codes: Iterable[str] = ()) -> tuple[str, bool]:
    """(``ivig`` | ``scig`` | ``imig``, whether intravenous was assumed) for an immune globulin record.

    The order's own route wins; then ATC (J06BA02 intravenous, J06BA01 extravascular); then the product
    (a brand given only under the skin or into a muscle, or route words in its name). Nothing at all: assumed
    intravenous, so that every intravenous check applies and the card says it was assumed (decision 36)."""
    if route_kind == "iv":
        return INTRAVENOUS, False
    if route_kind == "sc":
        return SUBCUTANEOUS, False
    if route_kind == "im":
        return INTRAMUSCULAR, False
    text = product_text or ""
    codes = set(atc_codes)
    sc_only = _words_pattern("subcutaneous_only").search(text) or _SC_TEXT.search(text)
    im_only = _words_pattern("intramuscular_only").search(text) or _IM_TEXT.search(text)
    if "J06BA02" in codes:
        return INTRAVENOUS, False
    if "J06BA01" in codes:
        return (INTRAMUSCULAR if im_only and not sc_only else SUBCUTANEOUS), False
    if sc_only:
        return SUBCUTANEOUS, False
    if im_only:
        return INTRAMUSCULAR, False
    return INTRAVENOUS, not _IV_TEXT.search(text)


# ============================================================================================ one order


@dataclass(frozen=True, slots=True)
class DoseLine:
    """One dosage line of an immune globulin order: the amount per administration and its schedule."""

    grams: float | None  # per administration, g (mL already converted)
    grams_per_kg: float | None  # per administration, g/kg
    per_day: float  # administrations a day
    days: float | None  # how many days the line runs
    start: date | None  # first day, when the order says
    ml: float | None = None  # the amount as ordered, when in mL

    def daily_grams(self, dosing_kg: float) -> float | None:
        if self.grams is not None:
            return self.grams * self.per_day
        if self.grams_per_kg is not None:
            return self.grams_per_kg * dosing_kg * self.per_day
        return None


@dataclass(slots=True)
class IgOrder:
    """An immune globulin draft order as read: its lines, its product's concentration, what could not be read."""

    reference: str
    label: str
    kind: str = INTRAVENOUS
    concentration: Concentration = field(default_factory=lambda: Concentration((10.0,), "assumed"))
    lines: list[DoseLine] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def start(self) -> date | None:
        return self.lines[0].start if self.lines else None

    @property
    def readable(self) -> bool:
        return bool(self.lines) and all(ln.grams is not None or ln.grams_per_kg is not None for ln in self.lines)


_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}


def _as_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _amount(q: dict[str, Any], conc: Concentration, problems: list[str]) -> tuple[float | None, float | None,
                                                                                 float | None]:
    """(g, g/kg, mL as ordered) of one dose quantity; a unit that cannot be read is said, not guessed."""
    v = _value(q)
    u = _unit(q)
    if v is None:
        return None, None, None
    if u in ("g", "gm", "gram", "grams"):
        return v, None, None
    if u == "mg":
        return v / 1000, None, None
    if u in ("g/kg", "gm/kg"):
        return None, v, None
    if u == "mg/kg":
        return None, v / 1000, None
    if u in ("ml", "milliliter", "millilitre"):
        return conc.grams_of_ml(v), None, v
    problems.append(f"dose unit {u or 'missing'!r} not understood; dose not checked")
    return None, None, None


def _checked(g: float | None, gpk: float | None, problems: list[str]) -> tuple[float | None, float | None]:
    """The amounts, each dropped (with the reason) when outside the plausible range."""
    for kind, value, unit in (("ivig_dose_g", g, "g"), ("ivig_dose_g_per_kg", gpk, "g/kg")):
        why = plausibility.problem(kind, value, unit) if value is not None else None
        if why:
            problems.append(f"dose {why}; dose not checked")
            g, gpk = (None, gpk) if kind == "ivig_dose_g" else (g, None)
    return g, gpk


def _schedule(d: dict[str, Any], per_day: float | None) -> tuple[float, float | None, date | None]:
    """(administrations a day, days, first day) of one dosage's timing."""
    t = d.get("timing") if isinstance(d.get("timing"), dict) else {}
    rep = t.get("repeat") if isinstance(t.get("repeat"), dict) else {}
    events = sorted({e for e in (_as_date(x) for x in t.get("event") or ()) if e})
    bp = rep.get("boundsPeriod") if isinstance(rep.get("boundsPeriod"), dict) else {}
    start = _as_date(bp.get("start")) or (events[0] if events else None)
    pd = per_day or 1.0
    count = rep.get("countMax") or rep.get("count")
    bd = rep.get("boundsDuration")
    days: float | None = None
    if isinstance(count, int | float) and count > 0:
        days = count / pd
    elif isinstance(bd, dict) and _value(bd) is not None:
        days = float(_value(bd) or 0) * _PERIOD_DAYS.get(str(bd.get("code") or bd.get("unit") or "d"), 1)
    elif start and _as_date(bp.get("end")):
        days = float(max(1, ((_as_date(bp.get("end")) or start) - start).days + 1))
    elif events:
        days = float(len(events))
    return pd, days, start


def read_ig_order(res: dict[str, Any], conc: Concentration,
                  per_day_of: Callable[[dict[str, Any]], float | None]) -> tuple[list[DoseLine], list[str]]:
    """The dose lines of an immune globulin MedicationRequest and what could not be read.

    ``per_day_of`` reads administrations a day from one dosage (structured timing, else its text). A dose
    range is checked at its upper end. Lines follow one another in time (a loading dose, then the rest)."""
    lines: list[DoseLine] = []
    problems: list[str] = []
    for d in res.get("dosageInstruction") or ():
        if not isinstance(d, dict):
            continue
        g = gpk = ml = None
        for dar in d.get("doseAndRate") or ():
            if not isinstance(dar, dict):
                continue
            q = dar.get("doseQuantity")
            if not isinstance(q, dict) and isinstance(dar.get("doseRange"), dict):
                q = dar["doseRange"].get("high")
                if isinstance(q, dict):
                    problems.append("dose written as a range; its upper end was checked")
            if isinstance(q, dict) and _value(q) is not None:
                g, gpk, ml = _amount(q, conc, problems)
                g, gpk = _checked(g, gpk, problems)
                break
        per_day, days, start = _schedule(d, per_day_of(d))
        lines.append(DoseLine(g, gpk, per_day, days, start, ml))
    if lines and any(ln.days is None for ln in lines):
        disp = res.get("dispenseRequest") if isinstance(res.get("dispenseRequest"), dict) else {}
        esd = disp.get("expectedSupplyDuration")
        if len(lines) == 1 and isinstance(esd, dict) and _value(esd) is not None:
            days = float(_value(esd) or 0) * _PERIOD_DAYS.get(str(esd.get("code") or esd.get("unit") or "d"), 1)
            ln = lines[0]
            lines[0] = DoseLine(ln.grams, ln.grams_per_kg, ln.per_day, days, ln.start, ln.ml)
    if any(ln.ml is not None for ln in lines):
        problems.append("ordered in mL; grams computed at " + f"{_num(conc.for_grams)}%")
    return lines, problems


# ============================================================================================ the course


@dataclass(slots=True)
class Course:
    """Every immune globulin draft of one request, read as one course (decision 35)."""

    orders: list[IgOrder]
    total_g: float | None  # None when a dose or a course length could not be read
    days: float | None  # days with a dose (calendar days when every order is dated)
    max_daily_g: float | None
    volume_ml: float | None  # total volume at each product's concentration (lowest when ambiguous)
    max_daily_ml: float | None
    dated: bool  # every order carries its first day, so the days are calendar days
    unread: list[str] = field(default_factory=list)  # labels of orders whose dose or length was not read


def _spread(line: DoseLine, first: date, daily: float, ml_daily: float, grams: dict[date, float],
            volume: dict[date, float]) -> date:
    """Put one line's daily amounts on the calendar from ``first``; the day after it is returned."""
    days = line.days or 0
    whole = max(1, math.ceil(days - 1e-9))
    for i in range(whole):
        part = min(1.0, days - i) if days > i else 0.0
        day = first + timedelta(days=i)
        grams[day] = grams.get(day, 0.0) + daily * part
        volume[day] = volume.get(day, 0.0) + ml_daily * part
    return first + timedelta(days=whole)


def course_of(orders: list[IgOrder], dosing_kg: float) -> Course:
    """Add up every order (split over days, or an order with its substitute) into one course."""
    unread = [o.label for o in orders if not o.readable or any(ln.days is None for ln in o.lines)]
    dated = bool(orders) and all(o.start is not None for o in orders)
    by_day: dict[date, float] = {}
    ml_by_day: dict[date, float] = {}
    total = volume = 0.0
    seq_days = 0.0
    max_daily = max_daily_ml = 0.0
    for o in orders:
        cursor = o.start
        for ln in o.lines:
            daily = ln.daily_grams(dosing_kg)
            if daily is None:
                continue
            # ordered in mL: the volume is what was ordered; in grams: at the product's concentration
            ml_daily = ln.ml * ln.per_day if ln.ml is not None else o.concentration.volume_ml(daily)
            max_daily, max_daily_ml = max(max_daily, daily), max(max_daily_ml, ml_daily)
            if ln.days is None:
                continue
            total += daily * ln.days
            volume += ml_daily * ln.days
            seq_days += ln.days
            if dated and cursor is not None:
                cursor = _spread(ln, ln.start or cursor, daily, ml_daily, by_day, ml_by_day)
    if dated and by_day:
        days: float | None = float(len([d for d, g in by_day.items() if g > 0]))
        max_daily, max_daily_ml = max(by_day.values()), max(ml_by_day.values())
    else:
        days = seq_days or None
    complete = not unread
    return Course(orders, total if complete else None, days if complete else None,
                  max_daily or None, volume if complete else None, max_daily_ml or None, dated, unread)


# ============================================================================================ suggestion owner


def ivig_offer_owner(rule_ids: Iterable[str]) -> str | None:
    """Of the IVIG indication cards that fired, the one that carries the IVIG suggestion: one card at most."""
    fired = set(rule_ids)
    for rule_id in criteria().get("ivig_offer_owner") or ():
        if rule_id in fired:
            return str(rule_id)
    return None

