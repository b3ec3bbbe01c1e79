"""Generate realistic CDS Hooks ``order-select`` requests with a chosen number of prefetched resources.

The filler resources are real Synthea R4 records (``tests/data/synthea-r4`` or ``BENCH_SYNTHEA_DIR``),
re-pointed at one patient and given unique ids; on top of them sits a small clinical core that makes the
rules run and answer cards: a neurosarcoidosis Condition, an earlier prednisone course, a recent weight,
height and creatinine, and an IVIG (or prednisone) draft order. Dates in the core are relative to today so the
rules see a current picture without the fixture time-pinning extension (which is off with auth on).

``python bench/gen.py --out bench/out`` writes ``req-10.json``, ``req-100.json``, ``req-1000.json`` and
the FHIR-fallback request; :func:`build_request` is what the benchmark and the tests use.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from cds_service.services import registry

PREFETCH = registry()["neurosarcoidosis-order-select"].prefetch

_REPO = Path(__file__).resolve().parent.parent
_REPO_SYNTHEA = _REPO / "tests" / "data" / "synthea-r4"
# The relapse shape starts from this fixture's record (a relapse on a prednisone taper), moved to today.
RELAPSE_FIXTURE = _REPO / "fixtures" / "fhir" / "07-s3r-relapse-prednisone-reescalated.json"
SHAPES = ("synthea", "relapse")
SYNTHEA_DIR = Path(os.environ.get("BENCH_SYNTHEA_DIR", _REPO_SYNTHEA))
SERVICE_ID = "neurosarcoidosis-order-select"
PATIENT_ID = "bench-pat-1"
DEFAULT_SIZES = (10, 100, 1000)
FHIR_SERVER = "https://ehr.example.org/fhir/R4"

# Share of the filler per resource type, roughly what an EHR returns for a chronic neurology patient.
_MIX = (("Condition", 0.15), ("MedicationRequest", 0.15), ("Observation", 0.70))
# weight, stated weight, height, BMI, body surface area
_BODY_MEASURES = {"29463-7", "3141-9", "3142-7", "8302-2", "39156-5", "8277-6"}
_RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_SNOMED = "http://snomed.info/sct"
_ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
_LOINC = "http://loinc.org"
_UCUM = "http://unitsofmeasure.org"


# --------------------------------------------------------------------------- the Synthea pool
_POOL: dict[str, list[dict[str, Any]]] | None = None
_URNS: dict[str, str] = {}  # transaction-bundle urn:uuid -> Type/id, so references read like an EHR's


def synthea_pool(directory: Path = SYNTHEA_DIR) -> dict[str, list[dict[str, Any]]]:
    """Conditions, MedicationRequests, Observations and Patients from every Synthea bundle, in file order."""
    global _POOL
    if _POOL is not None and directory == SYNTHEA_DIR:
        return _POOL
    pool: dict[str, list[dict[str, Any]]] = {"Patient": [], "Condition": [], "MedicationRequest": [],
                                             "Observation": []}
    for path in sorted(glob.glob(str(directory / "*.json"))):
        bundle = orjson.loads(Path(path).read_bytes())
        for entry in bundle.get("entry") or []:
            res = entry.get("resource") or {}
            full = entry.get("fullUrl")
            if isinstance(full, str) and full.startswith("urn:uuid:") and res.get("id"):
                _URNS[full] = f"{res.get('resourceType')}/{res['id']}"
            if res.get("resourceType") in pool:
                pool[res["resourceType"]].append(res)
    # The EHR answers the service's Observation search, so only the LOINC codes it asks for come back.
    # Body measures of other Synthea people (children among them) would give our patient a foreign height
    # or weight; the clinical core carries the patient's own.
    wanted = _searched_codes("Observation") - _BODY_MEASURES
    if wanted:
        pool["Observation"] = [o for o in pool["Observation"]
                               if {c.get("code") for c in (o.get("code") or {}).get("coding") or []} & wanted]
    if not pool["Observation"] or not pool["Patient"]:
        raise SystemExit(f"No Synthea R4 bundles with Patients and Observations found in {directory} "
                         "(set BENCH_SYNTHEA_DIR).")
    if directory == SYNTHEA_DIR:
        _POOL = pool
    return pool


def _searched_codes(rtype: str) -> set[str]:
    """The codes of the service's prefetch search for ``rtype`` (empty when it does not filter by code)."""
    for template in PREFETCH.values():
        path, _, query = template.partition("?")
        if path == rtype and query:
            codes = dict(parse_qsl(query)).get("code", "")
            return {c.split("|")[-1] for c in codes.split(",") if c}
    return set()


def _relink(node: Any) -> Any:
    """Rewrite transaction-bundle ``urn:uuid:`` references as the ``Type/id`` an EHR search returns."""
    if isinstance(node, dict):
        out = {k: _relink(v) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:"):
            out["reference"] = _URNS.get(ref, "Resource/" + ref[len("urn:uuid:"):])
        return out
    if isinstance(node, list):
        return [_relink(v) for v in node]
    return node


def _repoint(resource: dict[str, Any], new_id: str, patient_ref: str) -> dict[str, Any]:
    """A copy of a Synthea resource with a unique id, about our patient, without transaction urn refs."""
    res = _relink(resource)
    res["id"] = new_id
    res["subject"] = {"reference": patient_ref}
    return res


# --------------------------------------------------------------------------- the clinical core
def _iso(d: date) -> str:
    return d.isoformat()


def clinical_core(patient_id: str, today: date) -> dict[str, list[dict[str, Any]]]:
    """The resources that make the rules fire: diagnosis, prior steroid, weight, height, creatinine."""
    ref = {"reference": f"Patient/{patient_id}"}
    return {
        "Condition": [{
            "resourceType": "Condition", "id": "bench-neurosarc",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": _SNOMED, "code": "230193008", "display": "Neurosarcoidosis"},
                                {"system": _ICD10, "code": "D86.89", "display": "Sarcoidosis of other sites"}],
                     "text": "Neurosarcoidosis"},
            "subject": ref, "onsetDateTime": _iso(today - timedelta(days=400)),
            "recordedDate": _iso(today - timedelta(days=390)),
        }],
        "MedicationRequest": [{
            "resourceType": "MedicationRequest", "id": "bench-pred-course", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": "312615",
                                                      "display": "prednisone 20 MG Oral Tablet"}],
                                          "text": "prednisone 20 MG Oral Tablet"},
            "subject": ref, "authoredOn": _iso(today - timedelta(days=200)),
            "dosageInstruction": [{"text": "40 mg by mouth daily",
                                   "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "system": _UCUM,
                                                                     "code": "mg"}}]}],
        }],
        "Observation": [
            _quantity_obs("bench-weight", patient_id, "29463-7", "Body weight", 72.0, "kg", today - timedelta(days=7)),
            _quantity_obs("bench-height", patient_id, "8302-2", "Body height", 168.0, "cm", today - timedelta(days=7)),
            _quantity_obs("bench-creat", patient_id, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                          0.9, "mg/dL", today - timedelta(days=14)),
        ],
    }


def _quantity_obs(rid: str, patient_id: str, code: str, display: str, value: float, unit: str,
                  when: date) -> dict[str, Any]:
    category = "vital-signs" if code in _BODY_MEASURES else "laboratory"
    return {
        "resourceType": "Observation", "id": rid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category}]}],
        "code": {"coding": [{"system": _LOINC, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"{_iso(when)}T09:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": _UCUM, "code": unit},
    }


def draft_order(kind: str, patient_id: str, today: date) -> dict[str, Any]:
    """The order being selected: IVIG 2 g/kg over 5 days, or a prednisone 60 mg daily course."""
    base = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient_id}"}, "authoredOn": _iso(today),
            "requester": {"reference": "Practitioner/bench-prac-1"}}
    if kind == "ivig":
        return base | {
            "id": "bench-draft-ivig",
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.whocc.no/atc", "code": "J06BA02",
                            "display": "immunoglobulins, normal human, for intravascular adm."}],
                "text": "Immune globulin (human) 10% IV solution (IVIG)"},
            "dosageInstruction": [{
                "text": "0.4 g/kg IV daily for 5 days (2 g/kg course)",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "count": 5}},
                "route": {"coding": [{"system": _SNOMED, "code": "47625008", "display": "Intravenous route"}]},
                "doseAndRate": [{"doseQuantity": {"value": 28.8, "unit": "g", "system": _UCUM, "code": "g"}}]}],
        }
    if kind == "prednisone":
        return base | {
            "id": "bench-draft-pred",
            "medicationCodeableConcept": {
                "coding": [{"system": _RXNORM, "code": "312615", "display": "prednisone 20 MG Oral Tablet"}],
                "text": "prednisone 20 MG Oral Tablet"},
            "dosageInstruction": [{
                "text": "60 mg by mouth daily",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "route": {"coding": [{"system": _SNOMED, "code": "26643006", "display": "Oral route"}]},
                "doseAndRate": [{"doseQuantity": {"value": 60, "unit": "mg", "system": _UCUM, "code": "mg"}}]}],
        }
    raise ValueError(f"order kind must be 'ivig' or 'prednisone', not {kind!r}")


# --------------------------------------------------------------------------- requests
def patient_resource(patient_id: str) -> dict[str, Any]:
    patient = copy.deepcopy(synthea_pool()["Patient"][0])
    patient.pop("text", None)  # Synthea's narrative div is not what EHR prefetch carries
    patient["id"] = patient_id
    patient["gender"] = "female"
    patient["birthDate"] = "1976-05-14"
    return patient


def prefetch_resources(n: int, patient_id: str = PATIENT_ID, today: date | None = None) -> list[dict[str, Any]]:
    """Exactly ``n`` resources (n >= 6): the Patient, the clinical core, then Synthea filler."""
    today = today or datetime.now(UTC).date()
    core = clinical_core(patient_id, today)
    fixed = 1 + sum(len(v) for v in core.values())
    if n < fixed:
        raise ValueError(f"a request needs at least {fixed} resources (patient and clinical core)")
    pool = synthea_pool()
    out = [patient_resource(patient_id)]
    for rtype in ("Condition", "MedicationRequest", "Observation"):
        out.extend(core[rtype])
    filler = n - fixed
    ref = f"Patient/{patient_id}"
    counts = {rtype: int(filler * share) for rtype, share in _MIX}
    counts["Observation"] += filler - sum(counts.values())
    for rtype, count in counts.items():
        source = pool[rtype]
        for i in range(count):
            out.append(_repoint(source[i % len(source)], f"{rtype[:3].lower()}-{i}", ref))
    return out


def searchset(resources: list[dict[str, Any]], rtype: str, base: str = FHIR_SERVER) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": f"{base}/{rtype}"}],
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }


def prefetch_for(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefetch object an EHR would send for the service's discovery templates (every key filled)."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    prefetch: dict[str, Any] = {}
    for key, template in PREFETCH.items():
        path, _, query = template.partition("?")
        rtype = path.split("/", 1)[0]
        if not query:  # a read, e.g. Patient/{{context.patientId}}
            found = by_type.get(rtype) or [None]
            prefetch[key] = found[0]
        else:
            prefetch[key] = searchset(by_type.get(rtype, []), rtype)
    return prefetch


def build_request(n: int, *, order: str = "ivig", patient_id: str = PATIENT_ID, fhir_server: str | None = FHIR_SERVER,
                  with_prefetch: bool = True, today: date | None = None, shape: str = "synthea") -> dict[str, Any]:
    """One order-select request with ``n`` prefetched resources (or none, for the FHIR-fallback path).

    ``shape`` "synthea" is Synthea filler around a small clinical core; "relapse" is the request an EHR sends
    for a patient relapsing on prednisone when the IVIG order set is opened (:func:`relapse_request`)."""
    today = today or datetime.now(UTC).date()
    if shape == "relapse":
        return relapse_request(n, patient_id=patient_id, fhir_server=fhir_server, today=today)
    if shape != "synthea":
        raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
    draft = draft_order(order, patient_id, today)
    request: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "hook": "order-select",
        "context": {
            "userId": "Practitioner/bench-prac-1",
            "patientId": patient_id,
            "encounterId": "bench-enc-1",
            "selections": [f"MedicationRequest/{draft['id']}"],
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]},
        },
    }
    if fhir_server:
        request["fhirServer"] = fhir_server
        request["fhirAuthorization"] = {"access_token": "bench-opaque-access-token", "token_type": "Bearer",
                                        "expires_in": 300, "scope": "user/Patient.read user/Observation.read",
                                        "subject": "cds-service"}
    if with_prefetch:
        request["prefetch"] = prefetch_for(prefetch_resources(n, patient_id, today))
    return request


# --------------------------------------------------------------------------- the relapse shape
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T.*)?$")
# Lab series an EHR returns for the service's Observation search, newest first: code, display, unit, values
# cycled over the months (a slowly rising creatinine, a falling eGFR, a normal IgA, HbA1c on steroids).
_LAB_SERIES = (
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", (0.92, 0.88, 0.85, 0.83, 0.80)),
    ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by "
                "Creatinine-based formula (CKD-EPI 2021)", "mL/min/{1.73_m2}", (78, 81, 84, 86, 88)),
    ("29463-7", "Body weight", "kg", (81.0, 80.2, 79.5, 78.8, 78.0)),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", (6.1, 5.9, 5.8, 5.6, 5.5)),
    ("2458-8", "IgA [Mass/volume] in Serum", "mg/dL", (210, 205, 198, 220, 215)),
)


def _shift_dates(node: Any, delta: timedelta) -> Any:
    """A copy of ``node`` with every FHIR date or dateTime string moved by ``delta`` days."""
    if isinstance(node, dict):
        return {k: _shift_dates(v, delta) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift_dates(v, delta) for v in node]
    if isinstance(node, str):
        m = _DATE.match(node)
        if m:
            try:
                day = date.fromisoformat(m.group(1))
            except ValueError:
                return node
            return (day + delta).isoformat() + (m.group(2) or "")
    return node


def _relapse_record(patient_id: str, today: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fixture's record and draft orders, re-pointed at ``patient_id`` and moved so its "now" is today."""
    bundle = orjson.loads(RELAPSE_FIXTURE.read_bytes())
    pinned = date.fromisoformat(bundle["timestamp"][:10])
    record = _shift_dates([e["resource"] for e in bundle["entry"]], today - pinned)
    text = orjson.dumps(record).replace(b'"Patient/pt-07"', f'"Patient/{patient_id}"'.encode())
    record = orjson.loads(text)
    prefetched, drafts = [], []
    for res in record:
        if res["resourceType"] == "Patient":
            res["id"] = patient_id
        (drafts if res.get("status") == "draft" else prefetched).append(res)
    return prefetched, drafts


def _ivig_order_set(patient_id: str, today: date) -> list[dict[str, Any]]:
    """An IVIG order set as Epic sends it: the Medication in the Bundle, the order referencing it, premedication."""
    subject = {"reference": f"Patient/{patient_id}"}
    base = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order", "subject": subject,
            "authoredOn": f"{_iso(today)}T09:00:00Z", "requester": {"reference": "Practitioner/bench-prac-1"}}
    daily = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "count": 5}}
    iv = {"coding": [{"system": _SNOMED, "code": "47625008", "display": "Intravenous route"}]}
    return [
        {"resourceType": "Medication", "id": "bench-ivig-med",
         "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J06BA02",
                              "display": "immunoglobulins, normal human, for intravascular adm."}],
                  "text": "Immune globulin (human) 10% IV solution"},
         "form": {"text": "solution"}},
        base | {"id": "bench-draft-ivig", "medicationReference": {"reference": "Medication/bench-ivig-med"},
                "reasonReference": [{"reference": "Condition/relapse-1"}],
                "dosageInstruction": [{"text": "0.4 g/kg IV daily for 5 days (2 g/kg course)", "timing": daily,
                                       "route": iv, "doseAndRate": [{"doseQuantity": {
                                           "value": 32, "unit": "g", "system": _UCUM, "code": "g"}}]}]},
        base | {"id": "bench-draft-paracetamol",
                "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": "313782",
                                                          "display": "acetaminophen 325 MG Oral Tablet"}]},
                "dosageInstruction": [{"text": "650 mg by mouth 30 minutes before each infusion", "timing": daily}]},
        base | {"id": "bench-draft-diphenhydramine",
                "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": "1049630",
                                                          "display": "diphenhydramine HCl 25 MG Oral Capsule"}]},
                "dosageInstruction": [{"text": "25 mg by mouth 30 minutes before each infusion", "timing": daily}]},
        base | {"id": "bench-draft-saline",
                "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": "313002",
                                                          "display": "sodium chloride 9 MG/ML Injectable Solution"}]},
                "dosageInstruction": [{"text": "500 mL IV before each infusion", "timing": daily, "route": iv}]},
    ]


def _lab_series(count: int, patient_id: str, today: date) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        code, display, unit, values = _LAB_SERIES[i % len(_LAB_SERIES)]
        month = i // len(_LAB_SERIES)
        obs = _quantity_obs(f"lab-{i}", patient_id, code, display, values[month % len(values)], unit,
                            today - timedelta(days=21 + 30 * month))
        obs["valueQuantity"]["code"] = unit
        out.append(obs)
    return out


def _prednisone_history(count: int, patient_id: str, today: date) -> list[dict[str, Any]]:
    """Earlier prednisone prescriptions (a taper, one a month, completed), oldest last."""
    out = []
    for i in range(count):
        dose = (40, 30, 20, 15, 10, 7.5, 5)[i % 7]
        start = today - timedelta(days=120 + 30 * i)
        out.append({
            "resourceType": "MedicationRequest", "id": f"pred-hist-{i}", "status": "completed", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": _RXNORM, "code": "312615",
                                                      "display": "prednisone 20 MG Oral Tablet"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "authoredOn": _iso(start),
            "dosageInstruction": [{"text": f"{dose:g} mg by mouth daily",
                                   "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                                         "boundsPeriod": {"start": _iso(start),
                                                                          "end": _iso(start + timedelta(days=29))}}},
                                   "doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg", "system": _UCUM,
                                                                     "code": "mg"}}]}],
        })
    return out


def relapse_request(n: int, *, patient_id: str = PATIENT_ID, fhir_server: str | None = FHIR_SERVER,
                    today: date | None = None) -> dict[str, Any]:
    """Relapse on a prednisone taper, labs, and an IVIG order set being selected, with ``n`` prefetched resources.

    The record of fixture 07 (neurosarcoidosis, a prednisone taper, the relapse) moved to today, then what an
    EHR adds for such a patient: months of lab results from the service's Observation search (70 % of the
    filler), earlier prednisone prescriptions (15 %) and other Conditions from Synthea (15 %). The draft orders
    are an IVIG order set: the Medication inside the Bundle, the IVIG order referencing it (selected) and its
    premedication and saline orders, plus the fixture's prednisone re-escalation.
    """
    today = today or datetime.now(UTC).date()
    record, drafts = _relapse_record(patient_id, today)
    if n < len(record):
        raise ValueError(f"the relapse shape needs at least {len(record)} resources")
    filler = n - len(record)
    conditions = int(filler * 0.15)
    meds = int(filler * 0.15)
    labs = filler - conditions - meds
    ref = f"Patient/{patient_id}"
    pool = synthea_pool()["Condition"]
    resources = record + _lab_series(labs, patient_id, today) + _prednisone_history(meds, patient_id, today)
    resources += [_repoint(pool[i % len(pool)], f"con-{i}", ref) for i in range(conditions)]
    order_set = _ivig_order_set(patient_id, today)
    request: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "hook": "order-select",
        "context": {
            "userId": "Practitioner/bench-prac-1", "patientId": patient_id, "encounterId": "bench-enc-1",
            "selections": ["MedicationRequest/bench-draft-ivig"],
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": r} for r in order_set + drafts]},
        },
        "prefetch": prefetch_for(resources),
    }
    if fhir_server:
        request["fhirServer"] = fhir_server
    return request


def count_prefetched(request: dict[str, Any]) -> int:
    """How many resources a request's prefetch carries (Bundles counted by entry)."""
    total = 0
    for value in (request.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            total += len(value.get("entry") or [])
        else:
            total += 1
    return total


def body_name(n: int, shape: str = "synthea") -> str:
    """``req-100`` for the Synthea shape, ``req-relapse-100`` for the others."""
    return f"req-{n}" if shape == "synthea" else f"req-{shape}-{n}"


def write_requests(out: Path, sizes: tuple[int, ...] = DEFAULT_SIZES, order: str = "ivig",
                   fallback_server: str | None = None, shapes: tuple[str, ...] = ("synthea",)) -> dict[str, Path]:
    """Write one request body per size and shape (and the fallback request) to ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for shape in shapes:
        for n in sizes:
            name = body_name(n, shape)
            path = out / f"{name}.json"
            path.write_bytes(orjson.dumps(build_request(n, order=order, shape=shape)))
            paths[name] = path
    if fallback_server:
        path = out / "req-fallback.json"
        path.write_bytes(orjson.dumps(build_request(100, order=order, fhir_server=fallback_server,
                                                    with_prefetch=False)))
        paths["req-fallback"] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--order", default="ivig", choices=("ivig", "prednisone"))
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    shapes = tuple(args.shapes.split(","))
    for name, path in write_requests(args.out, sizes, args.order, shapes=shapes).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
