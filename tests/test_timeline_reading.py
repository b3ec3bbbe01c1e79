"""Reading the chart for the timeline from a FHIR server that misbehaves: another patient in the answer,
scopes not granted, referenced Medications, a refused type. The server is an in-process httpx transport."""

from __future__ import annotations

import asyncio

import httpx

from cds_service.sources.origin import OriginGuards
from cds_service.timeline.reading import read_chart

BASE = "https://ehr.example.org/fhir"
PID = "pt-1"


def _bundle(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _server(requests: list[str], *, patient_id: str = PID, refuse: str | None = None):
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir/")
        requests.append(path + (f"?{request.url.query.decode()}" if request.url.query else ""))
        rtype = path.split("/")[0]
        if rtype == refuse:
            return httpx.Response(403, json={"resourceType": "OperationOutcome"})
        if path.startswith("Patient/"):
            return httpx.Response(200, json={"resourceType": "Patient", "id": patient_id})
        if path.startswith("Medication/"):
            return httpx.Response(200, json={"resourceType": "Medication", "id": path.split("/")[1],
                                             "code": {"text": "Methotrexate 2.5 mg oral tablet"}})
        if rtype == "MedicationRequest":
            return httpx.Response(200, json=_bundle(
                {"resourceType": "MedicationRequest", "id": "mine", "subject": {"reference": f"Patient/{PID}"},
                 "medicationReference": {"reference": "Medication/mtx"}},
                {"resourceType": "MedicationRequest", "id": "theirs", "subject": {"reference": "Patient/pt-2"}},
                {"resourceType": "MedicationRequest", "id": "nobody"}))
        return httpx.Response(200, json=_bundle())

    return httpx.MockTransport(handle)


async def _read(transport, scope="launch patient/*.rs"):
    async with httpx.AsyncClient(transport=transport) as http:
        deadline = asyncio.get_running_loop().time() + 5
        return await read_chart(http, OriginGuards(), BASE, "token", PID, scope, deadline=deadline, max_pages=5,
                                max_depth=64, max_array=20_000, observation_codes=("2160-0",))


async def test_other_patients_and_unnamed_resources_are_left_out_and_counted():
    requests: list[str] = []
    chart = await _read(_server(requests))
    kept = [r["id"] for r in chart.record.of_type("MedicationRequest")]
    assert kept == ["mine"] and chart.other_patients == 2
    assert any("2 resources the FHIR server returned are not this patient" in n for n in chart.notes)
    searches = [r for r in requests if "?" in r]
    assert len(searches) == 5 and all(f"patient={PID}" in r for r in searches)  # only the token's patient


async def test_a_patient_read_answering_with_someone_else_is_refused():
    chart = await _read(_server([], patient_id="pt-2"))
    assert chart.record.patient is None and chart.other_patients >= 1


async def test_referenced_medications_are_read_so_the_reader_can_name_the_drug():
    requests: list[str] = []
    chart = await _read(_server(requests))
    assert "Medication/mtx" in requests
    assert [m["id"] for m in chart.record.of_type("Medication")] == ["mtx"]


async def test_types_not_granted_are_not_asked_for_and_said():
    requests: list[str] = []
    chart = await _read(_server(requests), scope="launch patient/Patient.rs patient/Condition.rs")
    asked = {r.split("?")[0].split("/")[0] for r in requests}
    assert asked == {"Patient", "Condition"}
    assert any(n.startswith("MedicationAdministration (infusions given in clinic") and "not granted" in n
               for n in chart.notes)


async def test_a_refused_type_is_said_and_the_rest_read():
    chart = await _read(_server([], refuse="MedicationAdministration"))
    assert any("MedicationAdministration" in n and "HTTP 403" in n for n in chart.notes)
    assert chart.record.patient is not None
