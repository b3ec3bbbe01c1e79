"""The OpenAPI document an integrator reads at /docs: errors, security, service ids, and clean text."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.services import registry
from tests.auth_support import trusted

HOOK_PATHS = ("/cds-services", "/cds-services/{service_id}", "/cds-services/{service_id}/feedback")


def _document(tmp_path, auth: bool) -> dict:
    settings = Settings(data_dir=tmp_path / "data", trusted_issuers=trusted() if auth else {}, redis_url=None,
                        database_url=None, enable_fixture_endpoint=True)
    with TestClient(create_app(settings)) as client:
        return client.get("/openapi.json").json()


def _operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


@pytest.fixture(params=[False, True], ids=["auth-off", "auth-on"])
def doc(request, tmp_path):
    return _document(tmp_path, request.param)


def test_every_error_response_is_an_operation_outcome_and_there_is_no_422(doc):
    schemas = doc["components"]["schemas"]
    assert "OperationOutcome" in schemas and "HTTPValidationError" not in schemas
    errors = 0
    for path, method, op in _operations(doc):
        assert "422" not in op["responses"], (path, method)
        for status, response in op["responses"].items():
            if int(status) >= 400:
                errors += 1
                assert response["description"], (path, status)
                (content,) = response["content"].values()
                assert content["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}, (path, status)
    assert errors >= 10
    hook_call = doc["paths"]["/cds-services/{service_id}"]["post"]["responses"]
    assert {"400", "404", "412", "413", "415"} <= set(hook_call)


def test_real_errors_match_the_documented_outcome_schema(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["OperationOutcome"]
    for response in (client.post("/cds-services/neurosarcoidosis-order-select", json={"hook": "x"}),
                     client.post("/cds-services/nope", json={}),
                     client.post("/cds-services/neurosarcoidosis-order-select", content=b"x",
                                 headers={"Content-Type": "text/plain"})):
        body = response.json()
        assert response.status_code >= 400 and set(body) <= set(schema["properties"])
        assert body["resourceType"] == schema["properties"]["resourceType"]["const"]
        issue = body["issue"][0]
        assert set(schema["properties"]["issue"]["items"]["required"]) <= set(issue)
        assert issue["severity"] in schema["properties"]["issue"]["items"]["properties"]["severity"]["enum"]


def test_bearer_jwt_security_scheme(tmp_path):
    for auth in (False, True):
        doc = _document(tmp_path / str(auth), auth)
        scheme = doc["components"]["securitySchemes"]["bearerJWT"]
        assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
        for path in HOOK_PATHS:
            for op in doc["paths"][path].values():
                if auth:
                    assert op["security"] == [{"bearerJWT": []}] and {"401", "503"} <= set(op["responses"])
                else:  # a development instance checks no token: optional, and never a 401
                    assert op["security"] == [{"bearerJWT": []}, {}] and "401" not in op["responses"]
        assert "security" not in doc["paths"]["/health"]["get"]


def test_service_ids_are_an_enum(doc):
    for path in ("/cds-services/{service_id}", "/cds-services/{service_id}/feedback"):
        (param,) = [p for p in doc["paths"][path]["post"]["parameters"] if p["name"] == "service_id"]
        assert param["schema"]["enum"] == sorted(registry().ids())


def test_no_docstring_markup_leaks_into_the_page(doc):
    text = json.dumps(doc)
    assert not re.search(r":(mod|func|class|meth|attr|data|obj|exc|ref):`", text)
    assert "``" not in text
    assert "`cds_service.hooks`" in doc["components"]["schemas"]["HookRequestBody"]["description"]


def test_readiness_and_liveness_are_documented(doc):
    assert set(doc["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}
    assert set(doc["paths"]["/health"]["get"]["responses"]) == {"200"}


def test_docs_pages_load_only_the_services_own_assets(client):
    assert client.get("/redoc").status_code == 404  # its bundle would fetch a logo from a CDN
    for page in ("/docs",):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "cdn." not in html and "fonts.googleapis" not in html
        for url in urls:
            assert client.get(url).status_code == 200, url


def _validator(doc: dict, schema_name: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]})


def test_each_service_documents_the_request_it_expects(tmp_path):
    """The hook-call body is one of the services' requests: hook, context fields and prefetch keys named."""
    doc = _document(tmp_path, auth=False)
    body = doc["paths"]["/cds-services/{service_id}"]["post"]["requestBody"]["content"]["application/json"]
    refs = {r["$ref"].rsplit("/", 1)[1] for r in body["schema"]["oneOf"]}
    assert refs == {f"Request-{s.id}" for s in registry()}
    for service in registry():
        schema = doc["components"]["schemas"][f"Request-{service.id}"]
        assert schema["properties"]["hook"]["const"] == service.hook
        assert set(schema["properties"]["prefetch"]["properties"]) == set(service.prefetch)
    sign = doc["components"]["schemas"]["Request-neurosarcoidosis-order-sign"]["properties"]
    assert "draftOrders" in sign["context"]["required"] and "selections" not in sign["context"]["properties"]
    assert sign["prefetch"]["properties"]["patient"]["properties"]["resourceType"]["const"] == "Patient"
    assert sign["prefetch"]["properties"]["conditions"]["properties"]["resourceType"]["const"] == "Bundle"


@pytest.mark.parametrize("example, service_id", [
    ("sandbox-order-select-request.json", "neurosarcoidosis-order-select"),
    ("sandbox-order-sign-request.json", "neurosarcoidosis-order-sign"),
])
def test_captured_sandbox_requests_match_their_documented_schema(tmp_path, example, service_id):
    from tests.conftest import CLIENT_EXAMPLES

    doc = _document(tmp_path, auth=False)
    request = json.loads((CLIENT_EXAMPLES / example).read_text())
    validator = _validator(doc, f"Request-{service_id}")
    assert not [e.message for e in validator.iter_errors(request)]
    # the same request without its draft orders is not what an order service expects
    broken = json.loads(json.dumps(request))
    del broken["context"]["draftOrders"]
    assert any("draftOrders" in e.message for e in validator.iter_errors(broken))
