"""How a laboratory result is read when EHRs write it untidily: comparators and units as text.

Decision 31: a result with a comparator (``"<0.07 g/L"``, ``">60"``) is a bound, not a value. It says on
which side of a threshold the true value lies only when the bound is on the far side of that threshold;
otherwise the side is unknown and the card must say so (:func:`below`).

Decision 32: without a UCUM ``code``, the human-readable ``unit`` text is accepted when, for the kind of
result it belongs to, it can mean only one thing ("mL/min/1.73 m2", "mg/dl", "Kg", "lbs", "µmol/L").
:func:`unit_code_from_text` maps such a spelling to the UCUM code the converter knows; anything else stays
unknown (decision 15).

Pure functions, no FHIR reading beyond the Quantity dict itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

COMPARATORS = ("<", "<=", ">=", ">")

# Spellings seen in exports that are not UCUM codes, by the kind of result (target: the UCUM code the
# converter knows). Matching is on a folded form (see _fold), so case, spaces, "²", "^2", "μ"/"µ" and a
# trailing "s" of a plural are already taken care of; only genuinely different words are listed.
_WORDS: dict[str, dict[str, str]] = {
    "creatinine": {"micromol/l": "umol/L", "micromoles/l": "umol/L", "mcmol/l": "umol/L",
                   "milligrams/dl": "mg/dL", "mg/100ml": "mg/dL", "mg%": "mg/dL"},
    "weight": {"kilogram": "kg", "kilo": "kg", "kgs": "kg", "pound": "[lb_av]", "lbs": "[lb_av]",
               "lb": "[lb_av]", "ounce": "[oz_av]", "oz": "[oz_av]", "gram": "g"},
    "height": {"centimeter": "cm", "centimetre": "cm", "inch": "[in_i]", "inche": "[in_i]", "in": "[in_i]",
               "\"": "[in_i]", "meter": "m", "metre": "m", "feet": "[ft_i]", "foot": "[ft_i]", "ft": "[ft_i]"},
    "egfr": {"ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73sqm": "mL/min/{1.73_m2}",
             "ml/min/1.73msq": "mL/min/{1.73_m2}", "ml/min/1.73": "mL/min/{1.73_m2}",
             "ml/min/bsa": "mL/min/{1.73_m2}", "ml/min/1.73m^2": "mL/min/{1.73_m2}",
             "ml/min/(1.73m2)": "mL/min/{1.73_m2}", "ml/min/std1.73m2": "mL/min/{1.73_m2}"},
    "iga": {"gm/l": "g/L", "mg/100ml": "mg/dL", "milligrams/dl": "mg/dL"},
    "bmi": {"kg/m2": "kg/m2", "kg/m^2": "kg/m2", "kg/sqm": "kg/m2", "kg/(m2)": "kg/m2"},
}


def _fold(text: str) -> str:
    """A spelling reduced to what distinguishes units: lower case, no spaces or braces or underscores,
    "µ"/"μ" as "u", superscript two as "2", no trailing plural "s" on the last word."""
    t = text.strip().lower()
    t = t.replace("µ", "u").replace("μ", "u").replace("²", "2").replace("^2", "2")
    t = re.sub(r"[\s{}_*]", "", t)
    t = t.replace("(1.73m2)", "1.73m2").replace(".m2", "m2")
    if len(t) > 2 and t.endswith("s") and t[-2].isalpha() and not t.endswith("ss"):
        t = t[:-1]
    return t


def unit_code_from_text(unit_text: Any, kind: str, known: Mapping[str, float]) -> str | None:
    """The UCUM code meant by a unit written as text, for a result of ``kind``, or None if not certain.

    ``known`` maps the UCUM codes the converter has to their factors; the answer is always one of them
    (the first listed of those the spelling can mean). A spelling that could mean two different factors
    is ambiguous and gives None.
    """
    if not isinstance(unit_text, str) or not unit_text.strip() or len(unit_text) > 40:
        return None
    if unit_text.strip() in known:
        return unit_text.strip()
    folded = _fold(unit_text)
    hits = [code for code in known if _fold(code) == folded]
    words = _WORDS.get(kind, {})
    word = words.get(folded) or words.get(folded + "s")
    if word is not None and word in known:
        hits.append(word)
    if not hits or len({known[code] for code in hits}) != 1:
        return None
    return next(code for code in known if code in hits)


def comparator_of(quantity: Any) -> str | None:
    """The comparator of a FHIR Quantity (``<``, ``<=``, ``>=``, ``>``), or None for an exact value.

    A comparator the specification does not define (``"ad"`` means "sufficient to achieve" and is not a
    bound) counts as none, and so does any value that is not text."""
    if not isinstance(quantity, dict):
        return None
    c = quantity.get("comparator")
    if isinstance(c, str) and c.strip() in COMPARATORS:
        return c.strip()
    return None


def below(value: float, comparator: str | None, threshold: float) -> bool | None:
    """Whether the true result lies below ``threshold``: True, False, or None when the bound leaves it open.

    ``value`` and ``threshold`` are in the same unit. ``<7`` is below 7; ``<10`` may or may not be below 7;
    ``>60`` is not below 60; ``>20`` may or may not be below 60.
    """
    if comparator is None:
        return value < threshold
    if comparator == "<":
        return True if value <= threshold else None
    if comparator == "<=":
        return True if value < threshold else None
    if comparator in (">", ">="):
        return False if value >= threshold else None
    return value < threshold
