import copy

import pytest

from cds_service.errors import BadRequest
from cds_service.hooks import last_segment, parse_call
from cds_service.services import registry

SELECT = registry()["neurosarcoidosis-order-select"]
SIGN = registry()["neurosarcoidosis-order-sign"]


def request(**ctx):
    context = {
        "patientId": "p1",
        "userId": "Practitioner/u1",
        "selections": ["MedicationRequest/m1"],
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order",
                          "subject": {"reference": "Patient/p1"},
                          "medicationCodeableConcept": {"text": "prednisone"}}}]},
    }
    context.update(ctx)
    return {"hook": "order-select", "hookInstance": "a8c3f6e0-1", "context": context}


def test_valid_call_is_parsed():
    call = parse_call(SELECT, request())
    assert call.patient_id == "p1" and call.selections == ["MedicationRequest/m1"]
    assert call.draft_orders[0]["id"] == "m1"


@pytest.mark.parametrize("patient", ["Patient/p1", "https://ehr.example.org/fhir/Patient/p1", "p1"])
def test_patient_id_prefixes_are_stripped(patient):
    assert parse_call(SELECT, request(patientId=patient)).patient_id == "p1"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("hookInstance"), "hookInstance"),
    (lambda r: r["context"].pop("patientId"), "patientId"),
    (lambda r: r["context"].pop("userId"), "userId"),
    (lambda r: r["context"].pop("draftOrders"), "draftOrders"),
    (lambda r: r["context"].update(draftOrders=[1, 2]), "draftOrders"),
    (lambda r: r["context"].update(selections="MedicationRequest/m1"), "selections"),
    (lambda r: r.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer"}), "fhirServer"),
    (lambda r: r.update(hook="order-sign"), "order-select"),
    (lambda r: r.update(context="nope"), "context"),
])
def test_spec_required_fields_are_enforced(mutate, message):
    body = request()
    mutate(body)
    with pytest.raises(BadRequest, match=message):
        parse_call(SELECT, body)


def test_lenient_with_real_client_shapes():
    body = request()
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["id"] = "x" * 194  # Epic ids are longer than FHIR's 64 characters
    order["category"] = {"coding": [{"code": "community"}]}  # object, not array (sandbox, Epic)
    order.pop("medicationCodeableConcept")
    order["medicationReference"] = {"reference": "Medication/med-1"}
    body["context"]["draftOrders"].pop("type")  # sandbox and spec examples omit Bundle.type
    body["context"]["draftOrders"]["entry"].append({"resource": {
        "resourceType": "Medication", "id": "med-1",
        "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J06BA02"}], "text": "IVIG"}}})
    body["context"]["selections"] = [f"MedicationRequest/{'x' * 194}"]
    body["context"]["someFutureKey"] = {"a": 1}
    body["extension"] = {"com.epic.cdshooks.request.fhir-version": "R4"}
    call = parse_call(SELECT, body)
    (o,) = call.draft_orders
    assert isinstance(o["category"], list)
    # the referenced Medication travels inside the order, whole (its strength matters, decision 34)
    assert o["medicationReference"] == {"reference": "#med-1"} and "medicationCodeableConcept" not in o
    assert o["contained"][0]["code"]["text"] == "IVIG"


def test_contained_medication_reference_is_not_a_problem():
    body = request()
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("medicationCodeableConcept")
    order["contained"] = [{"resourceType": "Medication", "id": "m1", "code": {"text": "OCTAGAM 5%"}}]
    order["medicationReference"] = {"reference": "#m1"}
    call = parse_call(SELECT, body)
    assert call.draft_orders[0]["medicationReference"] == {"reference": "#m1"}
    assert not any("could not be resolved" in n for n in call.notes)


def test_unresolvable_medication_reference_is_noted_not_fatal():
    body = request()
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("medicationCodeableConcept")
    order["medicationReference"] = {"reference": "Medication/missing"}
    call = parse_call(SELECT, body)
    assert any("could not be resolved" in n for n in call.notes)


def test_order_sign_has_no_selections():
    body = request()
    body["hook"] = "order-sign"
    body["context"].pop("selections")
    call = parse_call(SIGN, copy.deepcopy(body))
    assert call.selections == [] and len(call.draft_orders) == 1


def test_dstu2_medication_order_is_read_as_medication_request():
    body = request()
    body["context"]["draftOrders"]["entry"][0]["resource"]["resourceType"] = "MedicationOrder"
    assert parse_call(SELECT, body).draft_orders[0]["resourceType"] == "MedicationRequest"


def test_last_segment():
    assert last_segment("Patient/1/_history/2", "Patient") == "1"
