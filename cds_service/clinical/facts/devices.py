"""Reader of Device resources: an indwelling central venous catheter (thrombosis factor)."""

from __future__ import annotations

import re

from .. import criteria
from ..record import PatientRecord
from ..terminology import Terminology, concept_text
from ..thresholds import Thresholds
from .fhir import ref_of
from .model import Factor
from .validation import Validator

_CATHETER_RE = re.compile(r"central venous|\bcvc\b|\bpicc\b|peripherally inserted central|implant(ed|able) "
                          r"(venous )?port|port-?a-?cath|portacath|dialysis catheter|hickman|tunnel+ed catheter|"
                          r"central line|vascular access", re.IGNORECASE)


def read_devices(record: PatientRecord, term: Terminology, th: Thresholds) -> tuple[list[Factor], Validator]:
    """Catheter thrombosis factors, and the validator (its notes) of the devices read."""
    v = Validator()
    out: list[Factor] = []
    named = criteria.derived_factors()["catheter_device"]
    for res in record.of_type("Device"):
        if not isinstance(res, dict) or str(res.get("status") or "active") not in ("active", ""):
            continue
        text = concept_text(res.get("type"))
        if text and _CATHETER_RE.search(text) and v.valid(res):
            out.append(Factor(named["key"], named["label"], ref_of(res), text.split(" | ")[0]))
    return out, v
