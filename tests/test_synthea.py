"""Real-shaped EHR records (Synthea, hundreds of resources) served as prefetch with a draft order: 200, valid."""

import pytest
from conftest import SYNTHEA, load_json
from spec_check import assert_spec_valid_response

KEYS = {"Condition": "conditions", "MedicationStatement": "medicationStatements",
        "MedicationRequest": "medicationRequests", "Observation": "observations"}

IVIG_ORDER = {
    "resourceType": "MedicationRequest", "id": "draft-ivig", "status": "draft", "intent": "order",
    "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J06BA02"}],
                                  "text": "Immune globulin (human) IV"},
    "dosageInstruction": [{"text": "2 g/kg over 5 days", "doseAndRate": [{"doseQuantity": {
        "value": 28, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}}]}],
}


def records():
    return [pytest.param(p, id="_".join(p.name.split("_")[:2])) for p in sorted(SYNTHEA.glob("*.json"))]


def prefetch_from(bundle):
    patient = None
    groups = {k: [] for k in KEYS.values()}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            patient = res
        elif res["resourceType"] in KEYS:
            groups[KEYS[res["resourceType"]]].append({"fullUrl": entry.get("fullUrl"), "resource": res})
    prefetch = {"patient": patient}
    for key, entries in groups.items():
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return patient["id"], prefetch


@pytest.mark.parametrize("path", records())
@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_synthea_record_is_answered(client, path, hook):
    patient_id, prefetch = prefetch_from(load_json(path))
    order = dict(IVIG_ORDER, subject={"reference": f"urn:uuid:{patient_id}"})
    context = {"patientId": patient_id, "userId": "Practitioner/u1",
               "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/draft-ivig"]
    body = {"hook": hook, "hookInstance": f"synthea-{patient_id}", "context": context, "prefetch": prefetch}
    resp = client.post(f"/cds-services/neurosarcoidosis-{hook}", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert_spec_valid_response(out)
