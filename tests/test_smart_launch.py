"""The SMART launch of the treatment timeline against the test EHR (tests/smart_ehr.py) on 127.0.0.2.

Each step is driven by hand, as a browser would follow it: ``/smart/launch`` on the service (TestClient on
https://testserver, so the Secure cookie comes back), the EHR's authorize endpoint over real HTTP, then
``/smart/callback``. Each attack the protocol must stop is a test of its own.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.smart.session import s256
from tests.smart_ehr import SmartEHR
from tests.smart_support import EHR_HOST, free_port, loopback_alias_works, serving

pytestmark = pytest.mark.skipif(not loopback_alias_works(), reason=f"cannot bind {EHR_HOST} (no loopback alias)")

SERVICE = "https://testserver"
CALLBACK = f"{SERVICE}/smart/callback"
LONG = "pt-102"  # four IVIG courses, methotrexate stopped as ineffective
OTHER = "pt-101"  # another patient in the same EHR


@pytest.fixture(scope="module")
def ehr():
    port = free_port(EHR_HOST)
    ehr = SmartEHR(f"http://{EHR_HOST}:{port}", clients={"ns-timeline": {"redirect_uris": [CALLBACK]}})
    with serving(ehr.app(), EHR_HOST, port):
        yield ehr


@pytest.fixture(autouse=True)
def _reset(ehr):
    ehr.pkce_methods, ehr.refuse_types, ehr.broad_search, ehr.page_size = ["S256"], set(), False, 50
    ehr.fhir_requests.clear()
    ehr.slow_types = {}
    yield


def smart_settings(tmp_path, ehr, **kw) -> Settings:
    clients = kw.pop("smart_clients", {ehr.fhir: {"client_id": "ns-timeline", "frame_ancestors": [ehr.base]}})
    return Settings(data_dir=tmp_path / "data", trusted_issuers={}, redis_url=kw.pop("redis_url", None),
                    database_url=None, smart_clients=clients, log_level=kw.pop("log_level", "INFO"), **kw)


@pytest.fixture
def service(tmp_path, ehr):
    with TestClient(create_app(smart_settings(tmp_path, ehr)), base_url=SERVICE, follow_redirects=False) as c:
        yield c


def start(c: TestClient, ehr: SmartEHR, patient: str = LONG, app_context: str | None = "ivig.safety.renal",
          iss: str | None = None) -> httpx.Response:
    launch = ehr.new_launch(patient, app_context)
    return c.get("/smart/launch", params={"iss": iss or ehr.fhir, "launch": launch})


def authorize(location: str) -> str:
    """Follow the service's redirect to the EHR; the callback URL (path and query) the EHR sends back."""
    resp = httpx.get(location, follow_redirects=False, trust_env=False)
    assert resp.status_code == 302, resp.text
    back = resp.headers["location"]
    assert back.startswith(CALLBACK)
    return back[len(SERVICE):]


def run_launch(c: TestClient, ehr: SmartEHR, **kw) -> httpx.Response:
    first = start(c, ehr, **kw)
    assert first.status_code == 302, first.text
    return c.get(authorize(first.headers["location"]))


# ------------------------------------------------------------------------------------------------ the happy path
def test_launch_reads_the_chart_and_draws_the_timeline(service, ehr):
    first = start(service, ehr)
    assert first.status_code == 302
    target = urlsplit(first.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{ehr.base}/auth/authorize"
    q = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert q["response_type"] == "code" and q["client_id"] == "ns-timeline" and q["redirect_uri"] == CALLBACK
    assert q["aud"] == ehr.fhir and q["code_challenge_method"] == "S256" and "launch" in q["scope"].split()
    assert len(q["state"]) >= 40 and len(q["code_challenge"]) == 43
    cookie = first.headers["set-cookie"]
    assert re.match(r"__Host-ns-timeline-[0-9a-f]{20}=", cookie)
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=None", "Partitioned"):
        assert attribute in cookie
    page = service.get(authorize(first.headers["location"]))
    assert page.status_code == 200, page.text
    # PKCE: the verifier the service sent with the code is the one the challenge was made from
    assert s256(ehr.token_requests[-1]["code_verifier"]) == q["code_challenge"]
    assert ehr.token_requests[-1]["client_id"] == "ns-timeline" and "client_assertion" not in ehr.token_requests[-1]
    html = page.text
    assert "<svg" in html and "Treatment timeline" in html
    assert "Methotrexate" in html and "stopped: not effective" in html  # the reader's stop reason
    assert "IVIG safety: renal" in html  # the card that launched it (appContext)
    assert "1.15 -&gt; 1.9 mg/dL" in html and "KDIGO" in html  # creatinine around the third course
    assert "<script" not in html
    headers = page.headers
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert f"frame-ancestors {ehr.base}" in headers["content-security-policy"]
    assert "x-frame-options" not in headers
    assert "Max-Age=0" in headers["set-cookie"]  # the launch cookie is cleared


def test_launches_and_timelines_shown_are_counted_in_the_metrics(service, ehr):
    def count(series: str) -> float:
        for line in service.get("/metrics").text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    shown = 'cds_http_responses_total{endpoint="smart_callback",status="200"}'
    begun = 'cds_http_responses_total{endpoint="smart_launch",status="302"}'
    before = count(shown), count(begun)
    assert run_launch(service, ehr).status_code == 200
    assert (count(shown), count(begun)) == (before[0] + 1, before[1] + 1)


def test_a_fhir_type_the_ehr_refuses_is_said_plainly(service, ehr):
    ehr.refuse_types = {"MedicationAdministration"}
    page = run_launch(service, ehr)
    assert page.status_code == 200
    assert "What could not be read" in page.text
    assert "MedicationAdministration (infusions given in clinic" in page.text and "HTTP 403" in page.text


def test_a_slow_fhir_search_costs_the_deadline_not_the_page(tmp_path, ehr):
    import time

    ehr.slow_types = {"MedicationAdministration": 8}
    settings = smart_settings(tmp_path, ehr, smart_fhir_deadline_seconds=1.0)
    with TestClient(create_app(settings), base_url=SERVICE, follow_redirects=False) as c:
        first = start(c, ehr)
        back = authorize(first.headers["location"])
        started = time.monotonic()
        page = c.get(back)
        elapsed = time.monotonic() - started
    assert page.status_code == 200
    assert "MedicationAdministration (infusions given in clinic" in page.text and "did not answer in time" in page.text
    assert "Methotrexate" in page.text  # everything else was read and drawn
    assert elapsed < 7  # the deadline (1 s) with a wide margin, below the 8 s the server takes


def test_pages_are_followed_up_to_the_limit(service, ehr):
    ehr.page_size = 7
    page = run_launch(service, ehr, patient="pt-103")
    assert page.status_code == 200
    assert sum(1 for r in ehr.fhir_requests if "_offset=" in r) >= 5
    # 47 administrations in pages of 7: the first page and CDS_FHIR_MAX_PAGES (5) more, then the note
    assert "MedicationAdministration (infusions given in clinic: IVIG, infliximab, IV pulses): only the first " \
           "pages were read" in page.text


def test_a_failure_while_drawing_is_an_honest_page_not_a_trace(service, ehr, monkeypatch):
    from cds_service.timeline import service as timeline_service

    def broken(*args, **kwargs):
        raise ValueError("Lindqvist 1958-11-19")  # a message that could carry patient data

    monkeypatch.setattr(timeline_service, "build_timeline", broken)
    page = run_launch(service, ehr)
    assert page.status_code == 500 and "could not be drawn" in page.text
    assert "Lindqvist" not in page.text and "Traceback" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_an_unknown_app_context_highlights_nothing(service, ehr):
    page = run_launch(service, ehr, app_context="<script>alert(1)</script>")
    assert page.status_code == 200
    assert "Opened from the card" not in page.text and "<script>alert" not in page.text


# ------------------------------------------------------------------------------------------------ refusals
def test_an_ehr_that_offers_only_plain_pkce_is_refused(service, ehr):
    ehr.pkce_methods = ["plain"]
    resp = start(service, ehr)
    assert resp.status_code == 502
    assert "S256" in resp.text and "location" not in resp.headers
    assert "set-cookie" not in resp.headers


def test_the_service_never_asks_for_plain(service, ehr):
    run_launch(service, ehr)
    assert ehr.authorize_requests and all(r["code_challenge_method"] == "S256" for r in ehr.authorize_requests)


def test_an_iss_not_on_the_allow_list_is_refused_before_any_request(service, ehr):
    before = len(ehr.fhir_requests), len(ehr.authorize_requests)
    for iss in ("http://127.0.0.3:9/fhir", ehr.fhir + "x", ehr.base + "/other", "https://evil.example/fhir",
                "javascript:alert(1)"):
        resp = start(service, ehr, iss=iss)
        assert resp.status_code == 403, iss
        assert "not on this service&#x27;s list" in resp.text
    assert (len(ehr.fhir_requests), len(ehr.authorize_requests)) == before


def test_missing_launch_or_iss_is_refused(service, ehr):
    assert service.get("/smart/launch", params={"iss": ehr.fhir}).status_code == 400
    assert service.get("/smart/launch", params={"launch": "x"}).status_code == 400


def test_a_forged_or_missing_state_is_refused(service, ehr):
    first = start(service, ehr)
    back = authorize(first.headers["location"])
    code = parse_qs(urlsplit(back).query)["code"][0]
    forged = service.get("/smart/callback", params={"code": code, "state": secrets.token_urlsafe(32)})
    assert forged.status_code == 400 and "unknown" in forged.text
    missing = service.get("/smart/callback", params={"code": code})
    assert missing.status_code == 400 and "state" in missing.text
    assert not ehr.token_requests or ehr.token_requests[-1].get("code") != code  # the code was never used


def test_a_callback_in_another_browser_is_refused_and_spends_the_launch(service, ehr):
    first = start(service, ehr)
    back = authorize(first.headers["location"])
    victims_jar = service.cookies
    service.cookies = httpx.Cookies()  # the attacker's browser: the callback URL, but not the launch cookie
    stolen = service.get(back)
    assert stolen.status_code == 400 and "did not start in this browser" in stolen.text
    service.cookies = victims_jar
    again = service.get(back)  # single-use: the launch is gone, for the victim too
    assert again.status_code == 400


def test_a_cookie_from_another_launch_cannot_open_this_one(service, ehr):
    first = start(service, ehr)
    back = authorize(first.headers["location"])
    name = re.match(r"([^=]+)=", first.headers["set-cookie"]).group(1)
    service.cookies = httpx.Cookies()
    service.cookies.set(name, secrets.token_urlsafe(32), domain="testserver")  # the right name, a wrong secret
    assert service.get(back).status_code == 400


def test_a_replayed_callback_is_refused(service, ehr):
    first = start(service, ehr)
    back = authorize(first.headers["location"])
    assert service.get(back).status_code == 200
    replay = service.get(back)
    assert replay.status_code == 400 and "used already" in replay.text


def test_a_replayed_code_is_refused_by_the_ehr_and_shown_as_such(service, ehr):
    first = start(service, ehr)
    back = authorize(first.headers["location"])
    code = parse_qs(urlsplit(back).query)["code"][0]
    assert service.get(back).status_code == 200
    # the same code injected into a fresh launch of this browser
    second = start(service, ehr)
    state = parse_qs(urlsplit(second.headers["location"]).query)["state"][0]
    replay = service.get("/smart/callback", params={"code": code, "state": state})
    assert replay.status_code == 400 and "invalid_grant" in replay.text
    assert "<svg" not in replay.text


def test_a_code_with_the_wrong_verifier_is_refused(service, ehr):
    """A code obtained for launch A delivered with the state of launch B: the service sends B's verifier,
    which does not match A's challenge, so the EHR refuses and no chart is read."""
    a = start(service, ehr)
    code_a = parse_qs(urlsplit(authorize(a.headers["location"])).query)["code"][0]
    b = start(service, ehr, patient=OTHER)
    state_b = parse_qs(urlsplit(b.headers["location"]).query)["state"][0]
    reads = len(ehr.fhir_requests)
    resp = service.get("/smart/callback", params={"code": code_a, "state": state_b})
    assert resp.status_code == 400 and "invalid_grant" in resp.text
    assert ehr.token_requests[-1]["code"] == code_a
    assert len(ehr.fhir_requests) == reads


def test_the_ehr_denying_authorisation_is_said(service, ehr):
    first = start(service, ehr)
    state = parse_qs(urlsplit(first.headers["location"]).query)["state"][0]
    resp = service.get("/smart/callback", params={"error": "access_denied", "state": state})
    assert resp.status_code == 403 and "access_denied" in resp.text


def test_only_the_token_patient_is_read_and_other_patients_are_left_out(service, ehr):
    ehr.broad_search = True  # a FHIR server that answers searches with every patient's resources
    first = start(service, ehr)
    page = service.get(authorize(first.headers["location"]) + "&patient=" + OTHER)  # a patient in the URL: ignored
    assert page.status_code == 200
    assert "are not this patient&#x27;s (another patient, or no patient named); they were left out" in page.text
    assert "pt-101" not in page.text and "ifx-plan-1" not in page.text  # pt-101's infliximab plan
    assert "Infliximab" not in page.text
    searched = [r for r in ehr.fhir_requests if "?" in r]
    assert searched and all(f"patient={LONG}" in r for r in searched)


def test_error_pages_keep_the_framing_policy(service, ehr):
    resp = start(service, ehr, iss="https://evil.example/fhir")
    csp = resp.headers["content-security-policy"]
    assert f"frame-ancestors {ehr.base}" in csp and "default-src 'none'" in csp
    assert resp.headers["cache-control"] == "no-store"


def test_no_ancestors_configured_means_no_framing(tmp_path, ehr):
    settings = smart_settings(tmp_path, ehr, smart_clients={ehr.fhir: {"client_id": "ns-timeline"}})
    with TestClient(create_app(settings), base_url=SERVICE, follow_redirects=False) as c:
        page = run_launch(c, ehr)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_the_smart_routes_are_off_without_clients(client):
    assert client.get("/smart/launch", params={"iss": "x", "launch": "y"}).status_code == 404
