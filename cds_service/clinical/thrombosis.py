"""Thrombosis wording on the IVIG card (decision 38): active or past, anticoagulated or not, local estrogen.

- :func:`thrombosis_is_active`: a thrombosis recorded as active is called active; a history code, a
  resolved status or history words in the text make it a past event.
- :func:`anticoagulant_in` and :func:`treatment_dose`: whether a current drug is an anticoagulant, and
  whether its dose treats rather than prevents (the patient is then "already anticoagulated" and the card
  gives no prophylaxis advice).
- :func:`estrogen_is_local`: estrogen applied in the vagina at a local dose is not estrogen exposure.

The lists are data, in ``cds_service/clinical/criteria/immune_globulin.yaml``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .immune_globulin import criteria
from .memo import by_short_text

ACTIVE_STATUSES = ("active", "recurrence", "relapse")
MEMO_MAX_TEXT = 256  # characters of a medication text whose anticoagulant is remembered


@functools.lru_cache(maxsize=1)
def _history_words() -> re.Pattern[str]:
    return re.compile(criteria()["thrombosis_history_words"], re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _history_codes() -> tuple[tuple[str, ...], frozenset[str]]:
    """(ICD-10 prefixes without dots, SNOMED codes) that mean a past thrombosis."""
    hist = criteria()["thrombosis_history_codes"]
    return (tuple(str(c).replace(".", "").upper() for c in hist.get("icd10") or ()),
            frozenset(str(c) for c in hist.get("snomed") or ()))


def thrombosis_is_active(icd10_codes: Iterable[str], snomed_codes: Iterable[str], text: str,
                         clinical_status: str) -> bool:
    """An active thrombosis: recorded as active, with a code and a text that do not mean a past event."""
    if clinical_status not in ACTIVE_STATUSES:
        return False
    icd_prefixes, snomed = _history_codes()
    if any(str(c).replace(".", "").upper().startswith(icd_prefixes) for c in icd10_codes if icd_prefixes):
        return False
    if not snomed.isdisjoint(map(str, snomed_codes)):
        return False
    return not _history_words().search(text or "")


# ============================================================================================ anticoagulants


@dataclass(frozen=True, slots=True)
class Anticoagulant:
    key: str
    prophylactic_max_mg_day: float | None  # None (and no units limit): every dose treats
    intravenous_only: bool = False
    prophylactic_max_units_day: float | None = None


@functools.lru_cache(maxsize=1)
def _anticoagulants() -> tuple[tuple[re.Pattern[str], Anticoagulant], ...]:
    out = []
    for key, spec in (criteria().get("anticoagulants") or {}).items():
        stems = "|".join(re.escape(str(s)) for s in spec["stems"])
        out.append((re.compile(rf"(?<![a-z])(?:{stems})", re.IGNORECASE),
                    Anticoagulant(str(key), spec.get("prophylactic_max_mg_day"), bool(spec.get("intravenous_only")),
                                  spec.get("prophylactic_max_units_day"))))
    return tuple(out)


def anticoagulant_in(text: str) -> Anticoagulant | None:
    """The anticoagulant a medication's name or codings' displays name, if any.

    Memoised by the exact text (it depends on nothing else): every medication of a record that is no
    tracked drug is asked, and the same product names come back in every request."""
    return _anticoagulant_in(text)


@by_short_text(MEMO_MAX_TEXT)
def _anticoagulant_in(text: str) -> Anticoagulant | None:
    for rx, drug in _anticoagulants():
        if rx.search(text or ""):
            return drug
    return None


def treatment_dose(drug: Anticoagulant, daily_mg: float | None, route: str | None,
                   daily_units: float | None = None) -> bool | None:
    """True: a treatment (therapeutic) dose; False: prophylaxis; None: the dose could not be read.

    Unfractionated heparin treats only when given intravenously (subcutaneous heparin is prophylaxis)."""
    if drug.intravenous_only:
        return route == "iv"
    mg_max, units_max = drug.prophylactic_max_mg_day, drug.prophylactic_max_units_day
    if mg_max is None and units_max is None:
        return True
    if daily_mg is not None and mg_max is not None:
        return daily_mg > float(mg_max) + 1e-9
    if daily_units is not None and units_max is not None:
        return daily_units > float(units_max) + 1e-9
    return None


# ============================================================================================ estrogen

_VAGINAL_ROUTE_SCT = {"16857009"}  # Vaginal route
_VAGINAL_TEXT = re.compile(r"vagin|\bpv\b|per vaginam|pessar|vagifem|estring|imvexxy", re.IGNORECASE)


def estrogen_is_local(route: Any, product_text: str, dosage_text: str = "") -> bool:
    """Estrogen put in the vagina at a local dose (cream, tablet, low-dose ring): not a thrombosis factor.

    ``route`` is the dosage's route CodeableConcept (or None). A vaginal product that releases a systemic
    dose (listed in the data) still counts."""
    systemic = criteria().get("systemic_vaginal_estrogen") or []
    if any(re.search(rf"(?<![a-z]){re.escape(str(s))}", product_text or "", re.IGNORECASE) for s in systemic):
        return False
    if isinstance(route, dict):
        for cd in route.get("coding") or ():
            if isinstance(cd, dict) and str(cd.get("code") or "") in _VAGINAL_ROUTE_SCT:
                return True
        if _VAGINAL_TEXT.search(str(route.get("text") or "")):
            return True
    return bool(_VAGINAL_TEXT.search(f"{product_text or ''} {dosage_text or ''}"))
