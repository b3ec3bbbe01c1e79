"""Check a developer's fixture bundle before evaluating it, naming the entry that is wrong.

The hook endpoints are lenient because real EHRs bend FHIR; a fixture is written by us, so here the
resources the rules read are validated against the FHIR R4 (R4B) models and the first bad one is
reported as ``Bundle.entry[i].resource (Type/id)`` with the offending element.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError

from cds_service.clinical.record import CLINICAL_TYPES, ORDER_TYPES
from cds_service.errors import BadRequest
from cds_service.sources.bundle import bundle_resources

# The types the rules read (and the orders); anything else in a bundle (Practitioner ...) is ignored.
# MedicationOrder is DSTU2 and has no R4 model.
VALIDATED_TYPES = tuple(t for t in dict.fromkeys(CLINICAL_TYPES + ORDER_TYPES) if t != "MedicationOrder")
ACCEPTED_BUNDLE_TYPES = ("collection", "transaction", "searchset")


@functools.lru_cache(maxsize=32)
def _model(rtype: str):
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def _where(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "resource"


def validate_bundle(bundle: Any) -> list[dict[str, Any]]:
    """The bundle's resources, or a 400 naming the first entry that is not usable FHIR R4."""
    resources = bundle_resources(bundle)  # shape checks: Bundle, entry array, resource, resourceType, id
    btype = bundle.get("type")
    if btype is not None and btype not in ACCEPTED_BUNDLE_TYPES:
        raise BadRequest(f"Bundle.type '{btype}' is not supported here; use collection, transaction or searchset.")
    for i, entry in enumerate(bundle["entry"]):
        raw = entry["resource"]
        rtype = raw["resourceType"]
        if rtype not in VALIDATED_TYPES:
            continue
        try:
            _model(rtype).model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
            first = "; ".join(f"{_where(e)}: {e.get('msg')}" for e in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            # Name the entry by type/id, except a Patient: error messages reach logs, patient ids must not.
            rid = raw.get("id")
            label = f"{rtype}/{rid}" if isinstance(rid, str) and rid and rtype != "Patient" else rtype
            raise BadRequest(f"Bundle.entry[{i}].resource ({label}) is not valid FHIR R4: {first}{more}.") from exc
        except (TypeError, ValueError) as exc:  # the model library refusing odd input outright
            raise BadRequest(f"Bundle.entry[{i}].resource ({rtype}) is not valid FHIR R4: {exc}.") from exc
    return resources
