"""Validation of the resources that become facts: FHIR R4 on the fields the rules read.

Cheap dict checks pick the candidates; only a resource about to become a fact is validated, and only on
a projection (the fields the rules read; required elements they do not read, such as ``subject``, are
stubbed). The strict shapes of :mod:`.shapes` vouch for well-formed data in microseconds; whatever they
cannot vouch for is validated by ``fhir.resources.R4B``, which decides and says what is wrong. A resource
that fails is skipped with a note: one broken resource never breaks the request.
Outcomes are remembered by the resource's JSON content (:class:`~cds_service.clinical.memo.Memo`), so
the same resource version sent again is not validated twice.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..memo import Memo
from .fhir import ref_of
from .shapes import plainly_valid

# fields validated per resource type (what the rules read) and stubs for required fields they do not read
_PROJECTION = {
    "Condition": ("clinicalStatus", "verificationStatus", "code", "bodySite", "onsetDateTime", "onsetPeriod",
                  "recordedDate", "abatementDateTime", "abatementPeriod", "evidence", "note"),
    "Observation": ("status", "code", "valueQuantity", "valueCodeableConcept", "valueString", "interpretation",
                    "referenceRange", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "MedicationStatement": ("status", "statusReason", "medicationCodeableConcept", "effectiveDateTime",
                            "effectivePeriod", "dosage", "reasonCode"),
    "MedicationRequest": ("status", "intent", "statusReason", "medicationCodeableConcept", "authoredOn",
                          "dosageInstruction", "dispenseRequest", "reasonCode"),
    "MedicationAdministration": ("status", "statusReason", "medicationCodeableConcept", "effectiveDateTime",
                                 "effectivePeriod", "dosage"),
    "MedicationDispense": ("status", "medicationCodeableConcept", "whenHandedOver", "daysSupply",
                           "dosageInstruction"),
    "AllergyIntolerance": ("clinicalStatus", "verificationStatus", "code", "criticality", "reaction",
                           "onsetDateTime", "recordedDate"),
    "Device": ("status", "type"),
    "Encounter": ("status", "class", "period", "reasonCode"),
    "Patient": ("birthDate", "gender"),
    "ServiceRequest": ("status", "intent", "code"),
}
_STUBS: dict[str, dict[str, Any]] = {
    "Condition": {"subject": {"reference": "Patient/x"}},
    "Observation": {"status": "unknown"},
    "MedicationStatement": {"subject": {"reference": "Patient/x"}, "status": "unknown"},
    "MedicationRequest": {"subject": {"reference": "Patient/x"}, "status": "unknown", "intent": "order"},
    "MedicationAdministration": {"subject": {"reference": "Patient/x"}, "status": "unknown",
                                 "effectiveDateTime": "1900-01-01"},
    "MedicationDispense": {"status": "unknown"},
    "AllergyIntolerance": {"patient": {"reference": "Patient/x"}},
    "Encounter": {"status": "unknown", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                  "code": "AMB"}},
    "ServiceRequest": {"subject": {"reference": "Patient/x"}, "status": "unknown", "intent": "order"},
}
_MEDICATION_X = ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense")

_UNSET = object()
_KEY_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
# bounded in entries and in bytes of keys: hostile resources with megabyte notes must not turn the
# entries into gigabytes; a larger projection is validated every time, not remembered
VALIDATION_MEMO = Memo(max_entries=50_000, max_bytes=64 * 1024 * 1024, max_key=64 * 1024)


def validate_projection(rtype: str, proj: dict[str, Any]) -> str | None:
    """Validate the projection with ``fhir.resources.R4B``; None when valid, else the first problem.

    Keys are the exact JSON content (not sorted: the projection's own keys come in a fixed order). Values
    that are not plain JSON (datetime, subclasses) get no key and are validated every time.
    """
    try:
        key = rtype.encode() + orjson.dumps(proj, option=_KEY_OPTIONS)
    except TypeError:
        key = None
    if key is not None:
        hit = VALIDATION_MEMO.get(key, _UNSET)
        if hit is not _UNSET:
            return hit  # type: ignore[return-value]
    problem = _validate(rtype, proj)
    if key is not None:
        VALIDATION_MEMO.remember(key, problem)
    return problem


def _validate(rtype: str, proj: dict[str, Any]) -> str | None:
    if plainly_valid(rtype, proj):  # a shape narrower than FHIR's: certainly valid, no need to ask further
        return None
    return fhir_resources_problem(rtype, proj)


def fhir_resources_problem(rtype: str, proj: dict[str, Any]) -> str | None:
    """The full ``fhir.resources`` validation: None when valid, else the first problem in words."""
    try:
        from fhir.resources.R4B import get_fhir_model_class

        get_fhir_model_class(rtype).model_validate(proj)
    except Exception as exc:  # noqa: BLE001 - any validation problem skips this resource only
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return (" ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(exc).__name__))[:200]
    return None



def _resource_key(res: dict[str, Any], rtype: str, concept: Any) -> bytes | None:
    """Validation-cache key of a resource: its JSON content, plus the medication concept when the projection
    takes it from outside the resource. The projection is a function of exactly these (and constants), so
    equal keys mean equal outcomes. Starts with ``{`` or ``[``, so it never equals a projection key."""
    try:
        if rtype in _MEDICATION_X and "medicationCodeableConcept" not in res and isinstance(concept, dict):
            return orjson.dumps([res, concept], option=_KEY_OPTIONS)
        return orjson.dumps(res, option=_KEY_OPTIONS)
    except TypeError:
        return None


# ============================================================================================ builder



class Validator:
    """Validates the resources one reader selects, each once; a failure becomes a note.

    ``notes`` collects every note of the reader in order (what the clinician is told); ``skipped`` only
    the skipped resources (they also go to the record's notes).
    """

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self._seen: dict[int, bool] = {}

    def valid(self, res: dict[str, Any], concept: Any = None) -> bool:
        key = id(res)
        cached = self._seen.get(key)
        if cached is not None:
            return cached
        problem = problem_of(res, concept)
        if problem is not None:
            note = f"skipped {ref_of(res) or res.get('resourceType')}: invalid FHIR ({problem})"
            self.notes.append(note)
            self.skipped.append(note)
        self._seen[key] = problem is None
        return problem is None


def problem_of(res: dict[str, Any], concept: Any = None) -> str | None:
    """Why the part of ``res`` the rules read is not valid FHIR R4 (None: valid, or a type not read)."""
    rtype = res.get("resourceType")
    fields = _PROJECTION.get(rtype)  # type: ignore[arg-type]
    if fields is None:
        return None
    # Keyed by the resource itself (no projection to build on a hit), unless it carries much the rules never
    # read (a Patient's names and addresses, a narrative): then by the projection.
    if len(res) > len(fields) + 6 or "text" in res:
        return _validate_projection_of(res, rtype, fields, concept)  # type: ignore[arg-type]
    rkey = _resource_key(res, rtype, concept)  # type: ignore[arg-type]
    problem = VALIDATION_MEMO.get(rkey, _UNSET) if rkey is not None else _UNSET
    if problem is _UNSET:
        problem = _validate_projection_of(res, rtype, fields, concept)  # type: ignore[arg-type]
        if rkey is not None:
            VALIDATION_MEMO.remember(rkey, problem)
    return problem  # type: ignore[return-value]


def _validate_projection_of(res: dict[str, Any], rtype: str, fields: tuple[str, ...], concept: Any) -> str | None:
    """Build the projection (what the rules read; stubs for required fields they do not) and validate it."""
    proj: dict[str, Any] = {"resourceType": rtype}
    if isinstance(res.get("id"), str):
        proj["id"] = res["id"]
    for k in fields:
        if k in res:
            proj[k] = res[k]
    for k, v in _STUBS.get(rtype, {}).items():  # type: ignore[arg-type]
        if k == "effectiveDateTime" and ("effectivePeriod" in proj or "effectiveDateTime" in proj):
            continue
        proj.setdefault(k, v)
    if rtype in _MEDICATION_X and "medicationCodeableConcept" not in proj:
        proj["medicationCodeableConcept"] = concept if isinstance(concept, dict) else {"text": "?"}
    return validate_projection(rtype, proj)

