"""Small FHIR R4 dict builders for the clinical-engine tests (dates relative to NOW)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.clinical.record import PatientRecord

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
LNC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
PID = "p1"


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def day(days: float) -> str:
    return (NOW - timedelta(days=days)).date().isoformat()


def cc(system: str | None = None, code: str | None = None, display: str | None = None,
       text: str | None = None, *more: tuple[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codings = []
    if system and code:
        c = {"system": system, "code": code}
        if display:
            c["display"] = display
        codings.append(c)
    for s, c2 in more:
        codings.append({"system": s, "code": c2})
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out


def patient(age: int = 50, sex: str = "female", pid: str = PID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": sex, "birthDate": f"{NOW.year - age}-01-01"}


def condition(cid: str, code: dict[str, Any], *, clinical: str = "active", verification: str | None = "confirmed",
              onset_days: float | None = 400, recorded_days: float | None = None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{PID}"},
                         "code": code,
                         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                        "condition-clinical", "code": clinical}]}}
    if verification:
        r["verificationStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "condition-ver-status", "code": verification}]}
    if onset_days is not None:
        r["onsetDateTime"] = day(onset_days)
    if recorded_days is not None:
        r["recordedDate"] = day(recorded_days)
    r.update(extra)
    return r


def ns(cid: str = "ns-1", **kw: Any) -> dict[str, Any]:
    """Confirmed, active neurosarcoidosis (SNOMED 230193008)."""
    return condition(cid, cc(SCT, "230193008", "Neurosarcoidosis"), **kw)


def icd(cid: str, code: str, display: str | None = None, **kw: Any) -> dict[str, Any]:
    return condition(cid, cc(ICD, code, display), **kw)


def sct(cid: str, code: str, display: str | None = None, **kw: Any) -> dict[str, Any]:
    return condition(cid, cc(SCT, code, display), **kw)


def dosage(dose: float | None = None, unit: str = "mg", *, freq: int = 1, period: float = 1, period_unit: str = "d",
           route: str | None = None, text: str | None = None, count: int | None = None,
           timing: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if text:
        d["text"] = text
    if timing:
        rep: dict[str, Any] = {"frequency": freq, "period": period, "periodUnit": period_unit}
        if count is not None:
            rep["count"] = count
        d["timing"] = {"repeat": rep}
    if dose is not None:
        d["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}]
    if route:
        codes = {"oral": ("26643006", "Oral route"), "iv": ("47625008", "Intravenous route"),
                 "sc": ("34206005", "Subcutaneous route"), "inhaled": ("447694001", "Respiratory tract route")}
        c, disp = codes[route]
        d["route"] = {"coding": [{"system": SCT, "code": c, "display": disp}]}
    return d


def med_statement(mid: str, med: dict[str, Any], *, status: str = "active", start_days: float | None = 60,
                  end_days: float | None = None, dose: dict[str, Any] | None = None,
                  status_reason: str | None = None, reason: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationStatement", "id": mid, "status": status,
                         "subject": {"reference": f"Patient/{PID}"}, "medicationCodeableConcept": med}
    period: dict[str, str] = {}
    if start_days is not None:
        period["start"] = day(start_days)
    if end_days is not None:
        period["end"] = day(end_days)
    if period:
        r["effectivePeriod"] = period
    if dose is not None:
        r["dosage"] = [dose]
    if status_reason:
        r["statusReason"] = [{"text": status_reason}]
    if reason is not None:
        r["reasonCode"] = [reason]
    return r


def med_admin(mid: str, med: dict[str, Any], *, days_ago: float, dose_mg: float | None = None,
              route: str = "iv") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": mid, "status": "completed",
                         "subject": {"reference": f"Patient/{PID}"}, "medicationCodeableConcept": med,
                         "effectiveDateTime": ago(days_ago)}
    d: dict[str, Any] = {"route": dosage(route=route)["route"]}
    if dose_mg is not None:
        d["dose"] = {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}
    r["dosage"] = d
    return r


def obs(oid: str, loinc: str, value: float, unit: str, *, days_ago: float = 2, **extra: Any) -> dict[str, Any]:
    r = {"resourceType": "Observation", "id": oid, "status": "final", "code": cc(LNC, loinc),
         "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": ago(days_ago),
         "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
    r.update(extra)
    return r


def weight(kg: float, days_ago: float = 3, oid: str = "weight-1") -> dict[str, Any]:
    return obs(oid, "29463-7", kg, "kg", days_ago=days_ago)


def height(cm: float, oid: str = "height-1") -> dict[str, Any]:
    return obs(oid, "8302-2", cm, "cm", days_ago=400)


def creatinine(mg_dl: float, days_ago: float = 2, oid: str = "creat-1", unit: str = "mg/dL") -> dict[str, Any]:
    return obs(oid, "2160-0", mg_dl, unit, days_ago=days_ago)


def egfr(value: float, days_ago: float = 2, oid: str = "egfr-1") -> dict[str, Any]:
    return obs(oid, "98979-8", value, "mL/min/{1.73_m2}", days_ago=days_ago)


def draft(oid: str, med: dict[str, Any], dose: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationRequest", "id": oid, "status": "draft", "intent": "order",
                         "subject": {"reference": f"Patient/{PID}"}, "medicationCodeableConcept": med,
                         "authoredOn": NOW.date().isoformat()}
    if dose is not None:
        r["dosageInstruction"] = [dose]
    return r


IVIG = cc(ATC, "J06BA02", None, "Immune globulin (human) IV")
PREDNISONE = cc(RXN, "312615", "prednisone 20 MG Oral Tablet")
PREDNISONE_IN = cc(RXN, "8640", "Prednisone")
METHOTREXATE = cc(RXN, "105585", "methotrexate 2.5 MG Oral Tablet")
MMF = cc(RXN, "200060", "mycophenolate mofetil 500 MG Oral Tablet")
INFLIXIMAB = cc(RXN, "310994", "infliximab 100 MG Injection")
METHYLPRED = cc(RXN, "6902", "Methylprednisolone")
CYCLOPHOSPHAMIDE = cc(RXN, "1734917", "cyclophosphamide 500 MG Injection")
AMOXICILLIN = cc(RXN, "308182", "amoxicillin 500 MG Oral Capsule")


def ivig_order(oid: str = "ivig-1", g_per_day: float | None = 30, days: int | None = 5, unit: str = "g",
               route: str | None = "iv") -> dict[str, Any]:
    d = dosage(g_per_day, unit, count=days, route=route) if days else dosage(g_per_day, unit, route=route,
                                                                                 timing=False)
    return draft(oid, IVIG, d)


def record(*resources: dict[str, Any], drafts: list[dict[str, Any]] = (), selections: list[str] = (),
           pid: str = PID) -> PatientRecord:
    rec = PatientRecord(patient_id=pid, now=NOW)
    for r in resources:
        rec.add(r)
    rec.draft_orders.extend(drafts)
    rec.selections.extend(selections)
    return rec


def ns_patient(*resources: dict[str, Any], age: int = 50, sex: str = "female", **kw: Any) -> PatientRecord:
    """An adult with active neurosarcoidosis plus the given resources."""
    return record(patient(age, sex), ns(), *resources, **kw)
