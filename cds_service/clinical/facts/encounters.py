"""Reader of Encounter resources: a current inpatient stay for neurosarcoidosis (rapid progression)."""

from __future__ import annotations

from ..record import PatientRecord
from ..terminology import Terminology
from ..thresholds import Thresholds
from .fhir import listify, ref_of
from .model import FactRef
from .validation import Validator

_INPATIENT_CLASSES = ("IMP", "ACUTE", "NONAC", "EMER", "SS")
_CURRENT = ("in-progress", "arrived", "onleave")


def read_encounters(record: PatientRecord, term: Terminology, th: Thresholds,
                    ns_references: set[str]) -> tuple[list[FactRef], Validator]:
    """Current inpatient encounters whose reason or diagnosis is a neurosarcoidosis Condition
    (``ns_references``) or a neurosarcoidosis code; and the validator (its notes)."""
    v = Validator()
    out: list[FactRef] = []
    if not ns_references:
        return out, v
    for res in record.of_type("Encounter"):
        if not isinstance(res, dict) or res.get("status") not in _CURRENT:
            continue
        cls = res.get("class")
        code = (cls.get("code") if isinstance(cls, dict) else "") or ""
        if str(code).upper() not in _INPATIENT_CLASSES:
            continue
        about_ns = any("ns.specific" in term.match(rc).names for rc in listify(res.get("reasonCode")))
        for d in listify(res.get("diagnosis")) + listify(res.get("reasonReference")):
            r = d.get("condition") if isinstance(d, dict) and "condition" in d else d
            if isinstance(r, dict) and str(r.get("reference") or "") in ns_references:
                about_ns = True
        if about_ns and v.valid(res):
            out.append(FactRef("Inpatient encounter for neurosarcoidosis", f"{code} ({res.get('status')})",
                               ref_of(res)))
    return out, v
