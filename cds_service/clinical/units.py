"""UCUM unit conversion for the few quantities the rules read (decision 15, A18).

The unit is read from ``valueQuantity.code`` (UCUM). When ``code`` is missing, the ``unit`` text is accepted
when it can mean only one unit for the kind of result (decision 32, :mod:`.lab_values`). Anything
else is an unknown unit: :func:`convert` returns a :class:`Converted` with ``value=None`` and a
``problem`` text that the card shows ("value not used").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from . import lab_values, plausibility
from .memo import Memo

# kind -> (target unit shown on cards, {UCUM code: factor to target}); factors multiply.
_FACTORS: dict[str, tuple[str, dict[str, float]]] = {
    "creatinine": ("mg/dL", {
        "mg/dL": 1.0,
        "mg/dl": 1.0,
        "umol/L": 1 / 88.4,
        "µmol/L": 1 / 88.4,
        "mmol/L": 1000 / 88.4,
        "mg/L": 0.1,
    }),
    "weight": ("kg", {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "[oz_av]": 0.028349523125}),
    "height": ("cm", {"cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54, "in": 2.54, "[ft_i]": 30.48}),
    "iga": ("mg/dL", {"mg/dL": 1.0, "mg/dl": 1.0, "g/L": 100.0, "mg/L": 0.1, "g/dL": 1000.0}),
    "egfr": ("mL/min/{1.73_m2}", {
        "mL/min/{1.73_m2}": 1.0,
        "mL/min/1.73m2": 1.0,
        "mL/min/{1.73m2}": 1.0,
        "mL/min/1.73_m2": 1.0,
        "mL/min/(1.73.m2)": 1.0,
        "mL/min/{1.73.m2}": 1.0,
        "mL/min": 1.0,  # reported per 1.73 m2 by the LOINC code itself
        "mL/s/{1.73_m2}": 60.0,
    }),
    "hba1c": ("%", {"%": 1.0}),
    "bmi": ("kg/m2", {"kg/m2": 1.0, "kg/(m2)": 1.0, "kg/m^2": 1.0}),
    "protein": ("g/dL", {"g/dL": 1.0, "g/L": 0.1, "mg/dL": 0.001}),
    "viscosity": ("cP", {"cP": 1.0, "mPa.s": 1.0, "{relative_viscosity}": 1.0, "1": 1.0}),
    "mass_dose": ("mg", {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001}),
}


@dataclass(frozen=True, slots=True)
class Converted:
    value: float | None  # in the target unit; None = not usable
    unit: str  # target unit
    original: str  # "1.2 mg/dL" as recorded, for the card
    problem: str | None = None


def target_unit(kind: str) -> str:
    return _FACTORS[kind][0]


def factor(kind: str, code: str | None) -> float | None:
    if not code:
        return None
    return _FACTORS[kind][1].get(code.strip())


def _without_float_noise(x: float) -> float:
    """``x`` to 12 significant digits: 0.07 g/L * 100 is 7 mg/dL, not 7.000000000000001, so a result at a
    threshold compares as at it (decision 31: "<0.07 g/L" IgA is below 7 mg/dL)."""
    return float(f"{x:.12g}")


def convert(value: Any, code: str | None, kind: str) -> Converted:
    """Convert ``value`` recorded in UCUM ``code`` to the kind's target unit."""
    target = _FACTORS[kind][0]
    shown = f"{value} {code or ''}".strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Converted(None, target, shown, f"value {value!r} is not a number")
    f = factor(kind, code)
    if f is None:
        return Converted(None, target, shown, f"unknown unit {code!r} for {kind}; value not used")
    converted = float(value) if f == 1 else _without_float_noise(float(value) * f)
    implausible = plausibility.problem(kind, converted, target)
    if implausible:
        return Converted(None, target, shown, implausible)
    return Converted(converted, target, shown)


_MEMO = Memo(4096)
_MEMO_MAX_TEXT = 64


def convert_quantity(quantity: Any, kind: str) -> Converted:
    """Convert a FHIR Quantity dict (``valueQuantity``) of the given kind.

    Memoised by (kind, value and its type, code, unit) for plain numbers and short string units: the
    result (frozen) depends on nothing else. Zero is left out because ``-0.0 == 0.0`` but prints apart.
    """
    if type(quantity) is dict:
        value, code, unit = quantity.get("value"), quantity.get("code"), quantity.get("unit")
        vt = type(value)
        if (vt is float or vt is int) and value \
                and (code is None or type(code) is str and len(code) <= _MEMO_MAX_TEXT) \
                and (unit is None or type(unit) is str and len(unit) <= _MEMO_MAX_TEXT):
            key = (kind, vt, value, code, unit)
            conv = _MEMO.get(key)
            if conv is None:
                conv = _MEMO.remember(key, _convert_quantity(quantity, kind))
            return conv
    return _convert_quantity(quantity, kind)


def _convert_quantity(quantity: Any, kind: str) -> Converted:
    if not isinstance(quantity, dict):
        return Converted(None, _FACTORS[kind][0], "", "no valueQuantity")
    code = quantity.get("code")
    if code:
        return convert(quantity.get("value"), code, kind)
    # decision 32: a unit written as text, when it can mean one thing only; the card shows it as written
    unit = quantity.get("unit")
    conv = convert(quantity.get("value"), lab_values.unit_code_from_text(unit, kind, _FACTORS[kind][1]), kind)
    if isinstance(unit, str) and unit.strip():
        conv = replace(conv, original=f"{quantity.get('value')} {unit.strip()}")
    return conv


def kg(value: float, code: str) -> float | None:
    f = factor("weight", code)
    return None if f is None else value * f
