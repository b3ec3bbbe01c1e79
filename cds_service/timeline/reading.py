"""Read one patient's chart from the EHR's FHIR server with the token the launch obtained.

The reads go through the same :class:`~cds_service.sources.fhir_server.FhirServerSource` as the hook
fallback, so they keep its guards: the shared connection pool, the per-origin concurrency bound and
circuit breaker, no redirects, ``next`` links only on the server's own origin, the size cap, the JSON
bounds and the page limit (``CDS_FHIR_MAX_PAGES``). Only the deadline is longer
(``CDS_SMART_FHIR_DEADLINE_SECONDS``): a person is waiting for a page, not an EHR for a card.

The patient is the one in the token response, never one from the URL. A resource that belongs to
another patient (a server that answers a search too broadly) is left out and counted; what could not be
read (a query refused, not granted, too slow, pages left unread) becomes a sentence on the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from cds_service.clinical.record import PatientRecord
from cds_service.sources.base import Outcome
from cds_service.sources.fhir_server import FhirServerSource
from cds_service.sources.origin import OriginGuards

# key -> (resource type, query template, what the clinician loses without it)
QUERIES: dict[str, tuple[str, str, str]] = {
    "patient": ("Patient", "Patient/{id}", "the Patient record (age and sex)"),
    "conditions": ("Condition", "Condition?patient={id}", "Conditions (neurological manifestations and relapses)"),
    "medicationRequests": ("MedicationRequest", "MedicationRequest?patient={id}", "MedicationRequest (prescriptions)"),
    "medicationStatements": ("MedicationStatement", "MedicationStatement?patient={id}",
                             "MedicationStatement (medication history)"),
    "medicationAdministrations": ("MedicationAdministration", "MedicationAdministration?patient={id}",
                                  "MedicationAdministration (infusions given in clinic: IVIG, infliximab, IV pulses)"),
    "observations": ("Observation", "Observation?patient={id}&code={codes}&_sort=-date&_count=100",
                     "Observations (creatinine, eGFR, weight)"),
}
MAX_MEDICATION_READS = 50
_PATIENT_FIELDS = ("subject", "patient")


@dataclass
class Chart:
    record: PatientRecord
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    other_patients: int = 0


def granted_types(scope: str) -> set[str] | None:
    """Resource types the granted scopes let us read (SMART v1 ``.read`` or v2 ``.r…``); None: no scope said."""
    tokens = scope.split()
    if not tokens:
        return None
    out: set[str] = set()
    for tok in tokens:
        context, _, rest = tok.partition("/")
        if context not in ("patient", "user", "system") or "." not in rest:
            continue
        rtype, _, perms = rest.partition(".")
        perms = perms.split("?")[0]
        if perms in ("read", "*") or (perms and set(perms) <= set("cruds") and "r" in perms):
            out.add(rtype)
    return out


def _allowed(rtype: str, granted: set[str] | None) -> bool:
    return granted is None or "*" in granted or rtype in granted


def _belongs(resource: dict[str, Any], patient_id: str) -> bool:
    for name in _PATIENT_FIELDS:
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            r = ref["reference"].split("/_history")[0]
            return r == f"Patient/{patient_id}" or r.endswith(f"/Patient/{patient_id}")
    return resource.get("resourceType") == "Medication"  # Medications belong to no one


def _keep_own(bundle: dict[str, Any], patient_id: str) -> int:
    """Remove, in place, the entries of another patient; how many were removed."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return 0
    kept = []
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") not in ("OperationOutcome",) \
                and not _belongs(res, patient_id):
            continue
        kept.append(entry)
    bundle["entry"] = kept
    return len(entries) - len(kept)


def _medication_refs(record: PatientRecord) -> list[str]:
    have = {m.get("id") for m in record.of_type("Medication")}
    refs: dict[str, None] = {}
    for res in record.of_type("MedicationRequest", "MedicationStatement", "MedicationAdministration"):
        ref = res.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.startswith("Medication/") and target[11:] not in have:
            refs[target] = None
    return list(refs)[:MAX_MEDICATION_READS]


async def read_chart(http: httpx.AsyncClient, guards: OriginGuards, iss: str, access_token: str, patient_id: str,
                     scope: str, *, deadline: float, max_pages: int, max_depth: int, max_array: int,
                     observation_codes: tuple[str, ...]) -> Chart:
    source = FhirServerSource(http, iss, access_token, guards=guards, max_pages=max_pages, max_depth=max_depth,
                              max_array=max_array)
    chart = Chart(PatientRecord(patient_id=patient_id))
    granted = granted_types(scope)
    pid = quote(patient_id, safe="")
    codes = ",".join(f"http://loinc.org|{c}" for c in observation_codes)
    queries = {}
    for key, (rtype, template, meaning) in QUERIES.items():
        if _allowed(rtype, granted):
            queries[key] = template.format(id=pid, codes=codes)
        else:
            chart.notes.append(f"{meaning}: not granted by the EHR for this app, so not read.")
    results = await source.fetch(queries, deadline)
    for key, result in results.items():
        meaning = QUERIES[key][2]
        if result.outcome is Outcome.ANSWERED:
            _add(chart, key, result.value, patient_id, meaning)
        elif result.outcome is not Outcome.EMPTY:
            chart.notes.append(f"{meaning}: could not be read ({result.reason}).")
            continue
        if key == "medicationAdministrations" and not any(chart.record.of_type("MedicationAdministration")):
            chart.notes.append("No MedicationAdministration from this EHR: infusions given in clinic (IVIG, "
                               "infliximab, IV pulses) show only where a prescription or medication history "
                               "records them.")
    refs = _medication_refs(chart.record) if _allowed("Medication", granted) else []
    if refs:
        found = await source.fetch({ref: ref for ref in refs}, deadline)
        missed = [ref for ref, r in found.items() if r.outcome is not Outcome.ANSWERED]
        for r in found.values():
            if r.outcome is Outcome.ANSWERED and isinstance(r.value, dict) \
                    and r.value.get("resourceType") == "Medication":
                chart.record.add(r.value)
        if missed:
            chart.notes.append(f"{len(missed)} referenced Medication resources could not be read; those records "
                               f"are named by their display text only.")
    chart.requests = source.requests_made
    if chart.other_patients:
        chart.notes.append(f"{chart.other_patients} resources the FHIR server returned are not this patient's "
                           f"(another patient, or no patient named); they were left out.")
    return chart


def _add(chart: Chart, key: str, value: Any, patient_id: str, meaning: str) -> None:
    if not isinstance(value, dict):
        return
    if value.get("resourceType") == "Bundle":
        chart.other_patients += _keep_own(value, patient_id)
        if value.get("_truncated"):
            chart.notes.append(f"{meaning}: only the first pages were read (the page limit was reached); older "
                               f"records may be missing.")
        chart.record.add(value)
        return
    if key == "patient" and value.get("id") != patient_id:
        chart.other_patients += 1  # a read that answers with someone else
        return
    chart.record.add(value)

