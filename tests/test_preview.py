"""The developer preview: /fixtures/evaluate, the packaged fixture list, the page, Markdown sanitising."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.models import RULE_ID_EXTENSION, Card, Link, OverrideReason, Source, Suggestion, WireCard
from cds_service.preview import fixtures as fixture_files
from cds_service.preview.markdown import is_web_url, preview_card, render_markdown

TIMESTAMP = "2024-05-01T10:00:00Z"


def make_bundle(btype: str = "collection") -> dict:
    """A small synthetic patient: neurosarcoidosis, prednisone, weight and creatinine, and two draft orders."""
    subject = {"reference": "Patient/pat-1"}
    resources = [
        {"resourceType": "Patient", "id": "pat-1", "gender": "female", "birthDate": "1970-03-02"},
        {"resourceType": "Practitioner", "id": "doc-1", "name": [{"family": "Careful"}]},
        {"resourceType": "Condition", "id": "cond-ns", "subject": subject,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1144883004"}], "text": "Neurosarcoidosis"}},
        {"resourceType": "MedicationStatement", "id": "ms-pred", "status": "active", "subject": subject,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "8640"}], "text": "prednisone"},
         "effectivePeriod": {"start": "2023-01-01"}},
        {"resourceType": "Observation", "id": "obs-weight", "status": "final", "subject": subject,
         "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
         "effectiveDateTime": "2024-04-20", "valueQuantity": {"value": 70, "unit": "kg"}},
        {"resourceType": "Observation", "id": "obs-other", "status": "final", "subject": subject,
         "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}, "valueString": "ignored"},
        {"resourceType": "MedicationRequest", "id": "ivig-1", "status": "draft", "intent": "order", "subject": subject,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "5666"}], "text": "immune globulin"}},
        {"resourceType": "MedicationRequest", "id": "mtx-1", "status": "draft", "intent": "order", "subject": subject,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "6851"}], "text": "methotrexate"}},
    ]
    entries = []
    for r in resources:
        entry = {"fullUrl": f"urn:uuid:{r['id']}", "resource": r}
        if btype == "transaction":
            entry["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        if btype == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": btype, "timestamp": TIMESTAMP, "entry": entries}


def outcome(resp) -> str:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------- evaluate: good bundles
@pytest.mark.parametrize("btype", ["collection", "transaction", "searchset"])
def test_evaluate_returns_the_ehr_request_and_the_cds_response(client, btype):
    resp = client.post("/fixtures/evaluate?hook=order-select", json=make_bundle(btype))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"request", "response", "preview"}
    request = body["request"]
    assert request["hook"] == "order-select"
    assert request["hookInstance"]
    ctx = request["context"]
    assert ctx["patientId"] == "pat-1"
    assert ctx["userId"].startswith("Practitioner/")
    assert ctx["selections"] == ["MedicationRequest/ivig-1", "MedicationRequest/mtx-1"]
    drafts = [e["resource"]["id"] for e in ctx["draftOrders"]["entry"]]
    assert drafts == ["ivig-1", "mtx-1"]
    prefetch = request["prefetch"]
    assert prefetch["patient"]["id"] == "pat-1"
    assert [e["resource"]["id"] for e in prefetch["conditions"]["entry"]] == ["cond-ns"]
    assert [e["resource"]["id"] for e in prefetch["medicationStatements"]["entry"]] == ["ms-pred"]
    # the orders being placed travel in context, not in prefetch; only the coded Observations the rules read
    assert prefetch["medicationRequests"]["entry"] == []
    assert [e["resource"]["id"] for e in prefetch["observations"]["entry"]] == ["obs-weight"]
    # Bundle.timestamp pins "now", so fixture dates keep their meaning
    assert TIMESTAMP in json.dumps(request.get("extension"))
    assert isinstance(body["response"]["cards"], list)
    assert len(body["preview"]["cards"]) == len(body["response"]["cards"])


def test_order_sign_has_no_selections(client):
    resp = client.post("/fixtures/evaluate?hook=order-sign", json=make_bundle())
    assert resp.status_code == 200, resp.text
    ctx = resp.json()["request"]["context"]
    assert resp.json()["request"]["hook"] == "order-sign"
    assert "selections" not in ctx
    assert len(ctx["draftOrders"]["entry"]) == 2


def test_default_hook_is_order_select(client):
    resp = client.post("/fixtures/evaluate", json=make_bundle())
    assert resp.status_code == 200
    assert resp.json()["request"]["hook"] == "order-select"


def test_order_parameter_selects_one_order(client):
    resp = client.post("/fixtures/evaluate?hook=order-select&order=MedicationRequest/mtx-1", json=make_bundle())
    assert resp.status_code == 200, resp.text
    assert resp.json()["request"]["context"]["selections"] == ["MedicationRequest/mtx-1"]


def test_the_response_part_is_a_pure_cds_hooks_response(client, monkeypatch):
    install_cards(monkeypatch, [Card(summary="Check renal function", indicator="warning", detail="**x**",
                                     source=Source(label="Test"))])
    body = client.post("/fixtures/evaluate", json=make_bundle()).json()
    card = body["response"]["cards"][0]
    assert "detail_html" not in card and "detail_html" not in json.dumps(body["response"])
    assert card["detail"] == "**x**"
    assert body["preview"]["cards"][0]["detail_html"] == "<p><strong>x</strong></p>"
    assert body["preview"]["cards"][0]["uuid"] == card["uuid"]


# --------------------------------------------------------------------------- evaluate: bad input
def _entry(bundle, rid):
    return next(e for e in bundle["entry"] if e["resource"].get("id") == rid)


def test_invalid_resource_is_named_by_entry_index(client):
    bundle = make_bundle()
    _entry(bundle, "obs-weight")["resource"]["valueQuantity"]["value"] = "seventy"
    resp = client.post("/fixtures/evaluate", json=bundle)
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/fhir+json")
    message = outcome(resp)
    assert "Bundle.entry[4]" in message and "Observation/obs-weight" in message and "valueQuantity.value" in message


def test_invalid_patient_is_named_without_its_id(client):
    bundle = make_bundle()
    bundle["entry"][0]["resource"]["birthDate"] = "2nd of March"
    message = outcome(client.post("/fixtures/evaluate", json=bundle))
    assert "Bundle.entry[0].resource (Patient)" in message and "birthDate" in message
    assert "pat-1" not in message  # error messages reach the logs; patient ids must not


def test_unknown_element_in_an_order_is_refused(client):
    bundle = make_bundle()
    _entry(bundle, "ivig-1")["resource"]["dose"] = "2 g/kg"
    resp = client.post("/fixtures/evaluate", json=bundle)
    assert resp.status_code == 400
    assert "Bundle.entry[6]" in outcome(resp) and "dose" in outcome(resp)


def test_resources_the_rules_ignore_are_not_validated(client):
    bundle = make_bundle()
    _entry(bundle, "doc-1")["resource"]["name"] = "not a list"
    assert client.post("/fixtures/evaluate", json=bundle).status_code == 200


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b.update(resourceType="Patient"), "FHIR Bundle"),
        (lambda b: b.update(type="history"), "Bundle.type 'history'"),
        (lambda b: b.update(entry=[]), "Bundle.entry"),
        (lambda b: b["entry"].insert(2, "oops"), "Bundle.entry[2]"),
        (lambda b: b["entry"][3].pop("resource"), "Bundle.entry[3] has no resource"),
        (lambda b: b["entry"][5]["resource"].pop("resourceType"), "Bundle.entry[5].resource has no resourceType"),
        (lambda b: b["entry"].pop(0), "exactly one Patient"),
        (lambda b: [e["resource"].update(status="active") for e in b["entry"][6:]], "no draft order"),
    ],
)
def test_bad_bundles_get_a_400_that_says_what_is_wrong(client, mutate, needle):
    bundle = make_bundle()
    mutate(bundle)
    resp = client.post("/fixtures/evaluate", json=bundle)
    assert resp.status_code == 400, resp.text
    assert needle in outcome(resp)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("hook=admission", "hook must be one of order-select, order-sign, patient-view, not 'admission'"),
        ("order=not-a-reference", "order must be a reference"),
        ("order=MedicationRequest/missing", "no MedicationRequest/missing"),
    ],
)
def test_bad_query_parameters_get_a_400(client, query, needle):
    resp = client.post(f"/fixtures/evaluate?{query}", json=make_bundle())
    assert resp.status_code == 400
    assert needle in outcome(resp)


def test_body_that_is_not_json_or_too_big(tmp_path):
    settings = Settings(data_dir=tmp_path, trusted_issuers={}, max_body_bytes=2000)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/fixtures/evaluate", content=b"{not json", headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and "not valid JSON" in outcome(resp)
        resp = client.post("/fixtures/evaluate", content=b"<Bundle/>", headers={"Content-Type": "application/xml"})
        assert resp.status_code == 415
        resp = client.post("/fixtures/evaluate", json=make_bundle())
        assert resp.status_code == 413



def test_more_draft_orders_than_the_service_evaluates_is_a_413_as_for_a_hook_call(tmp_path):
    """CDS_MAX_DRAFT_ORDERS holds for the preview's evaluation too: the bundle has two draft orders."""
    settings = Settings(data_dir=tmp_path, trusted_issuers={}, max_draft_orders=1)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/fixtures/evaluate?hook=order-sign", json=make_bundle())
        assert resp.status_code == 413 and "CDS_MAX_DRAFT_ORDERS" in outcome(resp)
        assert resp.json()["issue"][0]["code"] == "too-costly"
        one_order = make_bundle()
        one_order["entry"] = [e for e in one_order["entry"] if e["resource"]["id"] != "mtx-1"]
        assert client.post("/fixtures/evaluate?hook=order-sign", json=one_order).status_code == 200

# --------------------------------------------------------------------------- authentication
ISSUERS = {"https://ehr.example.org": "https://ehr.example.org/jwks.json"}


def test_everything_is_off_when_authentication_is_on(tmp_path):
    settings = Settings(data_dir=tmp_path, trusted_issuers=ISSUERS)
    assert not settings.fixture_endpoint_enabled
    with TestClient(create_app(settings)) as client:
        for method, path in [("post", "/fixtures/evaluate"), ("get", "/fixtures"), ("get", "/"),
                             ("get", "/preview"), ("get", "/preview/static/preview.js")]:
            resp = getattr(client, method)(path)
            assert resp.status_code == 404, path
            assert resp.json()["resourceType"] == "OperationOutcome"


def test_enabled_with_authentication_it_demands_a_jwt(tmp_path):
    settings = Settings(data_dir=tmp_path, trusted_issuers=ISSUERS, enable_fixture_endpoint=True)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/fixtures/evaluate", json=make_bundle())
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/fixtures").status_code == 401
        assert client.get("/").status_code == 200  # the page itself holds no data


class RecordingAuthenticator:
    def __init__(self):
        self.paths = []

    async def authenticate(self, request, path):
        from cds_service.errors import Unauthorized

        self.paths.append(path)
        if request.headers.get("authorization") != "Bearer good":
            raise Unauthorized("test: no token")


def test_the_path_is_the_jwt_audience(tmp_path):
    settings = Settings(data_dir=tmp_path, trusted_issuers=ISSUERS, enable_fixture_endpoint=True)
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.authenticator = auth = RecordingAuthenticator()
        assert client.post("/fixtures/evaluate", json=make_bundle()).status_code == 401
        resp = client.post("/fixtures/evaluate?hook=order-sign", json=make_bundle(),
                           headers={"Authorization": "Bearer good"})
        assert resp.status_code == 200
        assert client.get("/fixtures", headers={"Authorization": "Bearer good"}).status_code == 200
    assert auth.paths == ["/fixtures/evaluate", "/fixtures/evaluate", "/fixtures"]


def test_auth_configured_without_an_authenticator_fails_closed(tmp_path):
    settings = Settings(data_dir=tmp_path, trusted_issuers=ISSUERS, enable_fixture_endpoint=True)
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.authenticator = None
        assert client.post("/fixtures/evaluate", json=make_bundle()).status_code == 401


# --------------------------------------------------------------------------- packaged fixtures
@pytest.fixture
def fixture_tree(tmp_path, monkeypatch):
    (tmp_path / "fhir").mkdir()
    (tmp_path / "expected").mkdir()
    (tmp_path / "fhir" / "ivig-renal.json").write_text(json.dumps(make_bundle()))
    (tmp_path / "fhir" / "plain.json").write_text(json.dumps(make_bundle("transaction")))
    (tmp_path / "fhir" / "bad name.json").write_text("{}")
    (tmp_path / "expected" / "ivig-renal.yaml").write_text(
        "title: IVIG with reduced renal function\n"
        "description: Immune globulin ordered for a patient with CKD stage 3.\n"
        "hook: order-sign\norder: MedicationRequest/ivig-1\n"
        "cards:\n  - rule_id: ivig.renal\n    indicator: critical\n  - rule: ivig.dose\n    indicator: info\n"
    )
    monkeypatch.setattr(fixture_files, "fixtures_dir", lambda kind="fhir": tmp_path / kind)
    return tmp_path


def test_fixture_list_reads_titles_and_expectations(client, fixture_tree):
    listed = client.get("/fixtures").json()["fixtures"]
    assert [f["name"] for f in listed] == ["ivig-renal", "plain"]
    ivig, plain = listed
    assert ivig["title"] == "IVIG with reduced renal function"
    assert ivig["description"].startswith("Immune globulin")
    assert ivig["hook"] == "order-sign" and ivig["order"] == "MedicationRequest/ivig-1"
    assert ivig["expectedCards"] == [{"rule_id": "ivig.renal", "indicator": "critical"},
                                     {"rule_id": "ivig.dose", "indicator": "info"}]
    assert plain == {"name": "plain", "title": "plain"}


def test_fixture_bundle_is_served_and_evaluates(client, fixture_tree):
    bundle = client.get("/fixtures/ivig-renal").json()
    assert bundle == make_bundle()
    assert client.post("/fixtures/evaluate?hook=order-sign", json=bundle).status_code == 200


@pytest.mark.parametrize("name", ["nope", "..%2Fexpected%2Fivig-renal", "bad name", ".hidden"])
def test_unknown_fixture_is_404(client, fixture_tree, name):
    resp = client.get(f"/fixtures/{name}")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_fixture_lookup_falls_back_to_the_source_tree():
    folder = fixture_files.fixtures_dir("fhir")
    assert folder.parts[-2:] == ("fixtures", "fhir")


def test_packaged_fixtures_all_evaluate(client):
    """Every fixture shipped with the service is accepted by the endpoint (with its own hook/order)."""
    for item in client.get("/fixtures").json()["fixtures"]:
        bundle = client.get(f"/fixtures/{item['name']}").json()
        params = {"hook": item.get("hook", "order-select")}
        if item.get("order"):
            params["order"] = item["order"]
        resp = client.post("/fixtures/evaluate", params=params, json=bundle)
        assert resp.status_code == 200, (item["name"], resp.text)


# --------------------------------------------------------------------------- the page
def test_page_has_a_strict_csp_and_no_inline_script(client):
    for path in ("/", "/preview"):
        resp = client.get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        html = resp.text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="preview/static/preview.js" defer>']
        assert "<style" not in html and " style=" not in html and "http://" not in html and "https://" not in html
    assert client.get("/preview/static/preview.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/preview/static/preview.css").headers["content-type"].startswith("text/css")
    assert client.get("/preview/static/index.html").status_code == 404
    assert client.get("/preview/static/..%2F__init__.py").status_code == 404


def test_script_inserts_html_only_from_the_sanitised_field():
    from importlib import resources

    js = (resources.files("cds_service.preview") / "static" / "preview.js").read_text(encoding="utf-8")
    assert js.count("innerHTML") == 1 and "innerHTML = extra.detail_html" in js
    assert "eval(" not in js and "document.write" not in js and "insertAdjacentHTML" not in js


def test_page_routes_are_not_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/fixtures/evaluate" in paths and "/" not in paths and "/preview" not in paths


# --------------------------------------------------------------------------- Markdown sanitising
HOSTILE = (
    "Check **renal function** first.\n\n"
    "<script>window.__pwned = 1</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 2\">\n\n"
    "[click me](javascript:window.__pwned=3) and [data](data:text/html;base64,PHNjcmlwdD4=) "
    "and [Guideline](https://example.org/ers-2021)\n\n"
    '<a href="javascript:alert(1)" onclick="alert(2)">raw link</a>\n\n'
    "<iframe src=\"https://evil.example\"></iframe>\n\n"
    "![pixel](https://evil.example/p.png) <svg onload=alert(1)></svg> [local](/admin)"
)


def test_markdown_renders_formatting_and_keeps_http_links():
    html = render_markdown(HOSTILE)
    assert "<strong>renal function</strong>" in html
    assert '<a href="https://example.org/ers-2021" target="_blank" rel="noopener noreferrer">Guideline</a>' in html


class _Tags(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_inert(html: str) -> None:
    """Only formatting tags; no event handlers, no src; every href an absolute http(s) URL."""
    for tag, attrs in _Tags(html).tags:
        assert tag in {"p", "strong", "em", "a", "ul", "ol", "li", "code", "pre", "br", "blockquote"}, tag
        assert not [a for a in attrs if a.startswith("on") or a in ("src", "style")], (tag, attrs)
        if "href" in attrs:
            assert is_web_url(attrs["href"]), attrs["href"]


def test_markdown_output_is_inert():
    html = render_markdown(HOSTILE)
    assert_inert(html)
    assert "&lt;script&gt;" in html  # hostile HTML is shown as text, not interpreted
    links = [attrs.get("href") for tag, attrs in _Tags(html).tags if tag == "a"]
    # javascript:/data: links stay text; a relative link loses its href (only absolute http(s) is kept)
    assert links == ["https://example.org/ers-2021", None]


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_detail_renders_nothing(text):
    assert render_markdown(text) == ""


def test_preview_card_filters_links_source_and_evidence():
    card = Card(
        summary="IVIG and renal function", indicator="critical", detail="x",
        source=Source(label="ERS 2021", url="javascript:alert(1)"),
        links=[Link(label="Guideline", url="https://example.org/g"), Link(label="Bad", url="javascript:alert(1)"),
               Link(label="Relative", url="/local"), Link(label="App", url="https://app.example", type="smart")],
        suggestions=[Suggestion(label="Cancel", actions=[])], selectionBehavior="at-most-one",
        overrideReasons=[OverrideReason(code="x", system="https://example.org", display="Benefit outweighs risk")],
        extension={RULE_ID_EXTENSION: "ivig.renal",
                   "org.neurosarcoidosis-cds.evidence": {"level": "B", "citation": "FDA label", "url": "data:x"}},
    ).model_dump(mode="json", exclude_none=True)
    out = preview_card(card)
    assert out["rule_id"] == "ivig.renal"
    assert "source_url" not in out
    # a smart link is shown as one (an EHR, or the development launcher, opens it: tests/test_timeline_links.py)
    assert out["links"] == [{"label": "Guideline", "url": "https://example.org/g"},
                            {"label": "App (SMART app: an EHR opens it)", "url": "https://app.example"}]
    assert out["evidence"] == [{"level": "B", "citation": "FDA label"}]


def install_cards(monkeypatch, cards):
    """Stand-in engine answering ``cards`` (the endpoint must work the same with the real engine)."""
    from cds_service.clinical import engine

    class Result:
        def __init__(self):
            self.wire_cards = [WireCard.of(c) for c in copy.deepcopy(cards)]

    monkeypatch.setattr(engine, "evaluate", lambda record, hook, **kw: Result())


def test_hostile_card_detail_comes_out_inert_from_the_endpoint(client, monkeypatch):
    install_cards(monkeypatch, [Card(summary="<b>hi</b>", indicator="warning", detail=HOSTILE,
                                     source=Source(label="Test", url="https://example.org"))])
    body = client.post("/fixtures/evaluate", json=make_bundle()).json()
    card = body["response"]["cards"][0]
    extra = body["preview"]["cards"][0]
    assert card["detail"] == HOSTILE  # the CDS Hooks response carries the Markdown untouched
    assert_inert(extra["detail_html"])
    assert extra["source_url"] == "https://example.org"
