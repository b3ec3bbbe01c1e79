"""The HTTP surface: discovery, status codes with OperationOutcome bodies, CORS, feedback, health, OpenAPI."""

import json

import pytest
from conftest import CLIENT_EXAMPLES, load_json

SELECT = "/cds-services/neurosarcoidosis-order-select"
SIGN = "/cds-services/neurosarcoidosis-order-sign"
ORIGIN = "https://sandbox.cds-hooks.org"


def empty_prefetch(patient_id="p1"):
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    return {"patient": {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"},
            "conditions": empty, "medicationStatements": empty, "medicationRequests": empty, "observations": empty,
            "allergies": empty, "medicationAdministrations": empty, "devices": empty}


def hook_request(hook="order-select", **extra):
    body = {
        "hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"patientId": "p1", "userId": "Practitioner/u1",
                    "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
                        {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "draft",
                                      "intent": "order", "subject": {"reference": "Patient/p1"},
                                      "medicationCodeableConcept": {"text": "amoxicillin 500 mg"}}}]}},
        "prefetch": empty_prefetch(),
    }
    if hook == "order-select":
        body["context"]["selections"] = ["MedicationRequest/m1"]
    body.update(extra)
    return body


def assert_outcome(resp, status, fragment=""):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/fhir+json")
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert fragment.lower() in body["issue"][0]["diagnostics"].lower()
    return body


def test_discovery_lists_select_and_sign_with_prefetch(client):
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = {s["hook"]: s for s in resp.json()["services"]}
    assert {"order-select", "order-sign"} <= set(services)
    for s in services.values():
        assert s["id"] and s["description"] and s["title"]
        assert {"patient", "conditions", "medicationStatements", "medicationRequests",
                "observations"} <= set(s["prefetch"])
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"


@pytest.mark.parametrize("path, hook", [(SELECT, "order-select"), (SIGN, "order-sign")])
def test_unrelated_order_is_answered_with_no_cards(client, path, hook):
    resp = client.post(path, json=hook_request(hook))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"cards": []}


def test_unknown_service_is_404(client):
    assert_outcome(client.post("/cds-services/nope", json=hook_request()), 404, "no CDS service")
    assert_outcome(client.post("/cds-services/nope/feedback", json={"feedback": []}), 404)


def test_wrong_hook_for_service_is_400(client):
    assert_outcome(client.post(SIGN, json=hook_request("order-select")), 400, "answers the 'order-sign' hook")


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b'{"hook": 1}',
                                 b'{"hook":"order-select","hookInstance":"x","context":[]}'])
def test_malformed_bodies_are_400(client, raw):
    assert_outcome(client.post(SELECT, content=raw, headers={"content-type": "application/json"}), 400)


def test_missing_prefetch_without_fhir_server_is_412(client):
    body = hook_request()
    body.pop("prefetch")
    assert_outcome(client.post(SELECT, json=body), 412, "no fhirServer")


def test_body_over_the_limit_is_413(client, settings):
    big = b'{"x": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
    assert_outcome(client.post(SELECT, content=big, headers={"content-type": "application/json"}), 413)


def test_deep_nesting_is_400(client):
    raw = b'{"a":' * 200 + b"1" + b"}" * 200
    assert_outcome(client.post(SELECT, content=raw, headers={"content-type": "application/json"}), 400, "nesting")


def test_non_json_content_type_is_refused(client):
    assert_outcome(client.post(SELECT, content=b"hook=x", headers={"content-type": "text/plain"}), 415)


def test_cors_preflight_without_authentication(client):
    resp = client.options(SELECT, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", ORIGIN)
    allowed = resp.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    resp = client.options(SELECT + "/feedback", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert resp.status_code == 200


def test_cors_headers_are_on_errors_too(client):
    resp = client.post("/cds-services/nope", json={}, headers={"Origin": ORIGIN})
    assert resp.status_code == 404 and resp.headers["access-control-allow-origin"] in ("*", ORIGIN)
    resp = client.post(SELECT, content=b"{", headers={"Origin": ORIGIN, "content-type": "application/json"})
    assert resp.status_code == 400 and "access-control-allow-origin" in resp.headers


def test_cors_origins_are_configurable(tmp_path):
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.config import Settings

    app = create_app(Settings(data_dir=tmp_path, cors_origins="https://ehr.example.org"))
    with TestClient(app) as c:
        ok = c.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
        assert ok.headers["access-control-allow-origin"] == "https://ehr.example.org"
        other = c.get("/cds-services", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("name", ["sandbox-feedback-accepted.json", "sandbox-feedback-overridden.json"])
def test_sandbox_feedback_is_accepted(client, name):
    resp = client.post(SELECT + "/feedback", json=load_json(CLIENT_EXAMPLES / name))
    outcome = "accepted" if "accepted" in name else "overridden"
    assert resp.status_code == 200
    assert resp.json() == {"received": 1, "stored": 1, "accepted": int(outcome == "accepted"),
                           "overridden": int(outcome == "overridden")}


@pytest.mark.parametrize("variant", ["overridden_with_reason", "overridden_with_epic_extension", "accepted"])
def test_epic_feedback_shapes_are_accepted(client, variant):
    body = load_json(CLIENT_EXAMPLES / "epic-docs-feedback-examples.json")[variant]
    assert client.post(SIGN + "/feedback", json=body).status_code == 200


def test_feedback_batch_and_repeats_are_fine(client):
    item = load_json(CLIENT_EXAMPLES / "sandbox-feedback-overridden.json")["feedback"][0]
    resp = client.post(SELECT + "/feedback", json={"feedback": [item, item, dict(item, card="other")]})
    # three overridden items, two distinct: none is reported as accepted
    assert resp.status_code == 200
    assert resp.json() == {"received": 3, "stored": 2, "accepted": 0, "overridden": 3}
    again = client.post(SELECT + "/feedback", json={"feedback": [item]})
    assert again.json() == {"received": 1, "stored": 0, "accepted": 0, "overridden": 1}


@pytest.mark.parametrize("body, fragment", [
    ({}, "feedback"),
    ({"feedback": []}, "feedback"),
    ({"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}, "outcome"),
    ({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
     "acceptedSuggestions"),
    ({"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}, "card"),
])
def test_invalid_feedback_is_400(client, body, fragment):
    assert_outcome(client.post(SELECT + "/feedback", json=body), 400, fragment)


def test_health_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/cds-services/{service_id}"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    refs = [s["$ref"] for s in schema["oneOf"]]  # one request shape per service
    assert refs and all(r.split("/")[-1] in spec["components"]["schemas"] for r in refs)
    assert any(r.endswith("neurosarcoidosis-order-select") for r in refs)
    assert client.get("/docs").status_code == 200


def test_unknown_route_and_method_are_outcomes(client):
    assert_outcome(client.get("/nowhere"), 404)
    assert_outcome(client.delete("/cds-services"), 405)


def test_request_extension_and_unknown_context_keys_are_ignored(client):
    body = hook_request(extension={"com.epic.cdshooks.request.bpa-trigger-action": "18"})
    body["context"]["com.example.newField"] = {"x": 1}
    assert client.post(SELECT, json=body).status_code == 200


def test_no_500_for_type_confusion(client):
    for mutate in (
        lambda b: b.update(prefetch=[]),
        lambda b: b.update(prefetch={"patient": 7}),
        lambda b: b["context"].update(patientId=7),
        lambda b: b["context"].update(draftOrders={"resourceType": "Bundle", "entry": {"a": 1}}),
        lambda b: b["context"]["draftOrders"]["entry"].append("junk"),
        lambda b: b.update(fhirAuthorization="token"),
        lambda b: b.update(fhirServer="ftp://x"),
    ):
        body = json.loads(json.dumps(hook_request()))
        mutate(body)
        resp = client.post(SELECT, json=body)
        assert resp.status_code < 500, (resp.status_code, resp.text)


def test_readme_curl_request_gets_the_cards_the_readme_promises(client):
    """fixtures/requests/ivig-order-select.json is what README's curl example posts."""
    from conftest import FIXTURES

    body = load_json(FIXTURES / "requests" / "ivig-order-select.json")
    resp = client.post(SELECT, json=body)
    assert resp.status_code == 200
    rules = {c["extension"]["org.neurosarcoidosis-cds.rule-id"]: c for c in resp.json()["cards"]}
    expected = {"stage.s3r-gc-refractory", "ivig.safety.renal", "ivig.indication.steroid-resistant", "ivig.dose"}
    assert expected <= set(rules)
    assert "eGFR 48" in rules["ivig.safety.renal"]["summary"]


def test_only_the_served_app_tunes_the_garbage_collector(settings):
    """gc.freeze() and the raised thresholds are for `cds-service serve`; an embedding app keeps its own."""
    import gc

    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.cli import served_app, tune_gc

    before = gc.get_threshold()
    with TestClient(create_app(settings)):
        assert gc.get_threshold() == before
    assert tune_gc in served_app().state.started_hooks


def test_app_state_reads_what_was_last_set_however_it_was_set():
    from cds_service.edge import AppState

    state = AppState()
    state.audit = "first"
    state["audit"] = "second"  # item and attribute writes are one entry
    assert state.audit == state["audit"] == "second"
    state.audit = "third"
    assert state["audit"] == "third" and list(state) == ["audit"] and len(state) == 1
    del state["audit"]
    assert getattr(state, "audit", None) is None and "audit" not in list(state)
    with pytest.raises(AttributeError):
        _ = state.metrics


def test_the_application_state_is_kept_as_plain_attributes(client):
    from cds_service.edge import AppState

    state = client.app.state
    assert isinstance(state, AppState)
    assert state.services is state["services"] and state.settings is state["settings"]
