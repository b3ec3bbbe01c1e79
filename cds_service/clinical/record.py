"""PatientRecord: the FHIR data of one hook call, gathered from whichever source had it.

Resources stay raw JSON dicts here: the facts readers pick the few resources the rules read with
dict checks and validate only those with ``fhir.resources.R4B`` (``clinical/facts/validation.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Resource types the rules read. Anything else in a prefetch bundle is ignored.
CLINICAL_TYPES = (
    "Patient",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
    "Medication",
    "Observation",
    "AllergyIntolerance",
    "Device",
    "Encounter",
    "Procedure",
)

ORDER_TYPES = ("MedicationRequest", "ServiceRequest", "MedicationOrder", "NutritionOrder", "DeviceRequest")


@dataclass
class PatientRecord:
    patient_id: str
    patient: dict[str, Any] | None = None
    # resourceType -> resources, de-duplicated by (type, id)
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The orders being selected/signed (MedicationRequest, ServiceRequest ...); a Medication they reference
    # in the draftOrders bundle is carried inside the order as a contained resource ("#id").
    draft_orders: list[dict[str, Any]] = field(default_factory=list)
    # order-select: references ("MedicationRequest/123") of the orders just selected
    selections: list[str] = field(default_factory=list)
    # Human-readable problems met while gathering (a skipped resource, a failed key); they end up in
    # the logs and, where they matter clinically, on a card.
    notes: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # resources left out because their subject (or patient) is another patient than ``patient_id``
    other_patients: int = 0
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, resource: Any) -> None:
        """Add one resource (or a searchset/collection Bundle of them)."""
        if not isinstance(resource, dict):
            self.notes.append("skipped a prefetch value that is not a JSON object")
            return
        if resource.get("resourceType") == "Bundle":
            self._add_bundle(resource)
        else:
            self._add_one(resource)

    def _add_bundle(self, bundle: dict[str, Any]) -> None:
        # One flat loop over the entries, type() checks, no recursion.
        entries = bundle.get("entry") or []
        if type(entries) is not list:
            self.notes.append("skipped a Bundle whose entry is not an array")
            return
        seen, resources = self._seen, self.resources
        for entry in entries:
            if type(entry) is not dict:
                continue
            res = entry.get("resource")
            if type(res) is not dict:
                continue
            search = entry.get("search")
            if type(search) is dict and search.get("mode") == "outcome":
                continue
            rtype = res.get("resourceType")
            if type(rtype) is not str or rtype in ("OperationOutcome", "Patient", "Bundle"):
                if rtype == "Bundle":
                    self._add_bundle(res)
                elif rtype == "Patient":
                    self._add_one(res)
                elif rtype != "OperationOutcome":
                    self.notes.append("skipped a resource without resourceType")
                continue
            if self._of_another_patient(res):
                continue
            rid = res.get("id")
            if type(rid) is str and rid:
                key = (rtype, rid)
                if key in seen:
                    continue
                seen.add(key)
            bucket = resources.get(rtype)
            if bucket is None:
                resources[rtype] = [res]
            else:
                bucket.append(res)

    def _add_one(self, resource: dict[str, Any]) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            self.notes.append("skipped a resource without resourceType")
            return
        if rtype == "OperationOutcome":
            return
        rid = resource.get("id")
        if rtype == "Patient" and isinstance(rid, str) and rid and self.patient_id and rid != self.patient_id:
            self.other_patients += 1  # someone else's Patient resource: never this patient's age and sex
            return
        if rtype != "Patient" and self._of_another_patient(resource):
            return
        if isinstance(rid, str) and rid:
            key = (rtype, rid)
            if key in self._seen:
                return
            self._seen.add(key)
        if rtype == "Patient":
            if self.patient is None or rid == self.patient_id:
                self.patient = resource
            return
        self.resources.setdefault(rtype, []).append(resource)

    def _of_another_patient(self, res: dict[str, Any]) -> bool:
        """The resource's subject (or patient) names a Patient other than this one: it is counted and left
        out. A reference that names no Patient (a urn:uuid, a Group) or no reference at all is kept."""
        pid = self.patient_id
        if not pid:
            return False
        for name in ("subject", "patient"):
            ref = res.get(name)
            if type(ref) is dict:
                r = ref.get("reference")
                if type(r) is str and "Patient/" in r:
                    r = r.split("/_history", 1)[0]
                    if r == "Patient/" + pid or r.endswith("/Patient/" + pid):
                        return False
                    self.other_patients += 1
                    return True
                return False
        return False

    def extend(self, resources: Iterable[Any]) -> None:
        for r in resources:
            self.add(r)

    def of_type(self, *types: str) -> Iterator[dict[str, Any]]:
        for t in types:
            yield from self.resources.get(t, ())

    def count(self) -> int:
        return sum(len(v) for v in self.resources.values()) + (1 if self.patient else 0)
