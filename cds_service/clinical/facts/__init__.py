"""Clinical facts of one request, read from a :class:`~cds_service.clinical.record.PatientRecord`.

Data flow: one reader per resource kind (``patient``, ``conditions``, ``observations``, ``medications``,
``allergies``, ``devices``, ``encounters``, ``orders``), each a pure function
``(record, terminology, thresholds) -> part``; ``derived`` combines the parts (body size, eGFR, KDIGO,
risk-factor assembly); ``build.build_facts`` composes them into :class:`~.model.Facts`. Shape helpers
(dates, timing, dose, route) are in ``fhir``; validation of the resources that become facts in
``validation``; the dataclasses in ``model``.
"""

from __future__ import annotations

from ..memo import clear_all as clear_caches
from .build import build_facts
from .derived import kdigo_aki
from .fhir import parse_dt, ref_of
from .model import Exposure, Factor, FactRef, Facts, LabValue, NSCondition, PlannedOrder, fmt

__all__ = ["Exposure", "FactRef", "Factor", "Facts", "LabValue", "NSCondition", "PlannedOrder",
           "build_facts", "clear_caches", "fmt", "kdigo_aki", "parse_dt", "ref_of"]
