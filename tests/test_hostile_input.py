"""Hostile input: size, nesting and array bounds, malformed JSON, hostile FHIR servers, random request shapes.

Whatever arrives, the answer is a 2xx or a 4xx with an OperationOutcome; never a 500, never a hang, and
no request leaves for a host the caller was not allowed to name.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
import orjson
import pytest
import respx
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from cds_service.body import check_bounds, parse_json
from cds_service.config import Settings
from cds_service.errors import BadRequest, ServiceError
from cds_service.feedback import parse_feedback
from cds_service.hooks import parse_call
from cds_service.services import registry
from cds_service.sources.gather import GatherPolicy, gather, prefetch_only
from tests.auth_support import hook_body

SELECT = f"/cds-services/{'neurosarcoidosis-order-select'}"
FHIR = "https://ehr.example.org/fhir"


@pytest.fixture
def small_limits(tmp_path):
    s = Settings(data_dir=tmp_path, trusted_issuers={}, redis_url=None, database_url=None,
                 max_body_bytes=20_000, max_json_depth=16, max_array_length=50, fhir_max_pages=3,
                 fhir_deadline_seconds=0.5)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c


def post(client, content: bytes, **headers):
    return client.post(SELECT, content=content, headers={"Content-Type": "application/json", **headers})


def assert_outcome(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------- body bounds
def test_body_over_the_limit_is_413(small_limits):
    big = hook_body()
    big["padding"] = "x" * 30_000
    assert_outcome(post(small_limits, orjson.dumps(big)), 413)


def test_chunked_body_over_the_limit_is_413_without_content_length(small_limits):
    def chunks():
        yield b'{"hook":"order-select","pad":"'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    resp = small_limits.post(SELECT, content=chunks(), headers={"Content-Type": "application/json"})
    assert_outcome(resp, 413)


def test_lying_content_length_is_400(small_limits):
    resp = small_limits.post(SELECT, content=b"{}", headers={"Content-Type": "application/json",
                                                              "Content-Length": "abc"})
    assert resp.status_code in (400, 413)


def test_nesting_deeper_than_the_limit_is_400(small_limits):
    body = hook_body()
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"a": deep}
    body["context"]["extra"] = deep
    resp = post(small_limits, orjson.dumps(body))
    assert_outcome(resp, 400)
    assert "nesting" in resp.json()["issue"][0]["diagnostics"]


def test_pathological_nesting_beyond_the_parser_limit_is_400(small_limits):
    # 10 000 levels in 20 kB: orjson's own recursion limit must turn into a 400, not a crash.
    assert_outcome(post(small_limits, b"[" * 9_000 + b"]" * 9_000), 400)
    assert_outcome(post(small_limits, b'{"a":' * 3_000 + b"1" + b"}" * 3_000), 400)


def test_array_longer_than_the_limit_is_400(small_limits):
    body = hook_body()
    body["context"]["selections"] = [f"MedicationRequest/{i}" for i in range(60)]
    resp = post(small_limits, orjson.dumps(body))
    assert_outcome(resp, 400)
    assert "array" in resp.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("raw", [b"", b"   ", b"null", b"[]", b"42", b'"str"', b"{", b"\xff\xfe{}", b'{"a":NaN}',
                                 b'{"hook": "order-select"} trailing', b"\x00"])
def test_malformed_json_is_400(small_limits, raw):
    assert_outcome(post(small_limits, raw), 400)


def test_wrong_content_type_is_415(small_limits):
    resp = small_limits.post(SELECT, content=orjson.dumps(hook_body()), headers={"Content-Type": "text/plain"})
    assert_outcome(resp, 415)


def test_check_bounds_is_iterative():
    """Nesting far beyond Python's recursion limit is refused with a 400, not a RecursionError."""
    deep = b'{"k":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(BadRequest, match="nesting"):
        check_bounds(deep, max_depth=64, max_array=20_000)
    check_bounds(orjson.dumps({"k": [{"a": [1, 2, {"b": None}]} for _ in range(5_000)]}), max_depth=64,
                 max_array=20_000)


# --------------------------------------------------------------------------- hostile FHIR servers
def _patient_or_empty(request: httpx.Request) -> httpx.Response:
    if "/Patient/" in request.url.path:
        return httpx.Response(200, json={"resourceType": "Patient", "id": "pat-7f3a9"})
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": []})


def test_endless_next_links_stop_at_max_pages(small_limits):
    with respx.mock(assert_all_called=False) as mock:
        pages = mock.get(url__startswith=f"{FHIR}/page").mock(side_effect=lambda req: httpx.Response(200, json={
            "resourceType": "Bundle", "type": "searchset", "entry": [],
            "link": [{"relation": "next", "url": f"{FHIR}/page?n={time.time_ns()}"}]}))
        mock.route(host="ehr.example.org").mock(side_effect=_patient_or_empty)
        body = hook_body(fhir_server=FHIR)
        body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                          "link": [{"relation": "next", "url": f"{FHIR}/page?n=0"}]}
        resp = post(small_limits, orjson.dumps(body))
    assert resp.status_code == 200, resp.text
    assert pages.call_count == 3  # fhir_max_pages


@pytest.mark.parametrize("next_url", ["https://evil.example/fhir/steal", "http://ehr.example.org/fhir/p2",
                                      "https://ehr.example.org:8443/fhir/p2", "//evil.example/x",
                                      "https://ehr.example.org@evil.example/fhir"])
def test_next_link_to_another_origin_is_never_requested(small_limits, next_url):
    with respx.mock(assert_all_called=False) as mock:
        ehr = mock.route(scheme="https", host="ehr.example.org", port=443).mock(side_effect=_patient_or_empty)
        foreign = mock.route().mock(return_value=httpx.Response(200, json={}))  # anything else
        body = hook_body(fhir_server=FHIR, access_token="at-secret")
        body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                          "link": [{"relation": "next", "url": next_url}]}
        resp = post(small_limits, orjson.dumps(body))
    assert resp.status_code == 412
    assert foreign.call_count == 0
    assert ehr.call_count >= 1  # the allowed server itself was used for the other keys


def test_redirect_from_the_fhir_server_is_not_followed(small_limits):
    with respx.mock(assert_all_called=False) as mock:
        evil = mock.route(host="evil.example").mock(return_value=httpx.Response(200, json={}))
        mock.route(host="ehr.example.org").mock(
            return_value=httpx.Response(302, headers={"Location": "https://evil.example/fhir/Patient/x"}))
        resp = post(small_limits, orjson.dumps(hook_body(prefetch=False, fhir_server=FHIR, access_token="at")))
    assert_outcome(resp, 412)
    assert evil.call_count == 0


def test_slow_fhir_server_is_cut_at_the_deadline(small_limits):
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="ehr.example.org").mock(side_effect=slow)
        started = time.perf_counter()
        resp = post(small_limits, orjson.dumps(hook_body(prefetch=False, fhir_server=FHIR)))
        elapsed = time.perf_counter() - started
    assert_outcome(resp, 412)
    assert resp.json()["issue"][0]["code"] == "timeout"
    assert elapsed < 2.0


def test_huge_or_garbage_fhir_answers_are_412(small_limits):
    for answer in (httpx.Response(200, content=b"<html>"), httpx.Response(200, json=[1, 2]),
                   httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
                   httpx.Response(500)):
        with respx.mock(assert_all_called=False) as mock:
            mock.route(host="ehr.example.org").mock(return_value=answer)
            resp = post(small_limits, orjson.dumps(hook_body(prefetch=False, fhir_server=FHIR)))
        assert_outcome(resp, 412)


@pytest.mark.parametrize("server", ["http://[::1", "http://a:99999/fhir", "http://", "https://ehr.example.org/f\n",
                                    "http://exa mple.org/"])
def test_malformed_fhir_server_url_is_4xx_not_500(small_limits, server):
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
        mock.route().mock(return_value=httpx.Response(503))
        resp = post(small_limits, orjson.dumps(hook_body(prefetch=False, fhir_server=server)))
    assert 400 <= resp.status_code < 500, resp.text


@pytest.mark.parametrize("link", [["junk", 5, None], {"relation": "next"}, "next", 42])
def test_junk_bundle_links_do_not_break_paging(small_limits, link):
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="ehr.example.org").mock(side_effect=_patient_or_empty)
        body = hook_body(fhir_server=FHIR)
        links = [*link, {"relation": "next", "url": f"{FHIR}/p2"}] if isinstance(link, list) else link
        body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": links}
        resp = post(small_limits, orjson.dumps(body))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("conditions", [
    {"resourceType": "Bundle", "type": "searchset", "entry": True},
    {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "OperationOutcome"}, "search": "x"}]},
    {"resourceType": "Bundle", "entry": [None, 1, "x", {"resource": []}]},
    {"resourceType": 5},
    [],
])
def test_malformed_prefetch_values_are_4xx_or_ignored(small_limits, conditions):
    body = hook_body()
    body["prefetch"]["conditions"] = conditions
    resp = post(small_limits, orjson.dumps(body))
    assert resp.status_code in (200, 400, 412), resp.text  # 412: an outcome-only Bundle is a failed prefetch


def test_hostile_patient_id_cannot_reshape_the_fhir_query(small_limits):
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route(host="ehr.example.org").mock(side_effect=_patient_or_empty)
        body = hook_body(patient="x&_include=*&subject=../../admin", prefetch=False, fhir_server=FHIR)
        post(small_limits, orjson.dumps(body))
    assert route.call_count >= 1
    for c in route.calls:
        url = c.request.url
        assert url.path.startswith("/fhir/"), url
        assert "_include" not in url.params and "subject" not in url.params, url


# --------------------------------------------------------------------------- property-based
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(body: dict[str, Any], path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    body = copy.deepcopy(body)
    node = body
    for p in path[:-1]:
        node = node[p]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return body


def _base_body(fhir: bool) -> dict[str, Any]:
    body = hook_body(fhir_server=FHIR if fhir else None, access_token="at" if fhir else None)
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Condition", "id": "c1", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "230193008"}]}, "subject": {"reference": "Patient/p"}}}]}
    return body


@st.composite
def mutated_bodies(draw, fhir: bool = False):
    body = _base_body(fhir)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not isinstance(body, dict):
            break
        path = draw(st.sampled_from(_paths(body)))
        body = _mutate(body, path, draw(JSON), draw(st.booleans()))
    return body


SERVICE = registry()["neurosarcoidosis-order-select"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(JSON, mutated_bodies()))
def test_parse_call_raises_only_service_errors(data):
    if not isinstance(data, dict):
        return
    try:
        call = parse_call(SERVICE, data)
    except ServiceError as exc:
        assert 400 <= exc.status < 500
        return
    # A call that parsed must also survive gathering its prefetch (no FHIR server: 412 at worst).
    try:
        policy = GatherPolicy(deadline_seconds=0.5)
        asyncio.run(gather(call, prefetch_only(call), policy))
    except ServiceError as exc:
        assert 400 <= exc.status < 500


@FUZZ
@given(JSON)
def test_parse_feedback_raises_only_service_errors(data):
    for candidate in ({"feedback": data}, {"feedback": [data]}, data if isinstance(data, dict) else {}):
        try:
            parse_feedback(candidate)
        except ServiceError as exc:
            assert exc.status == 400


@FUZZ
@given(st.binary(max_size=200) | JSON.map(orjson.dumps))
def test_parse_json_raises_only_service_errors(raw):
    try:
        parse_json(raw, max_depth=8, max_array=10)
    except ServiceError as exc:
        assert exc.status == 400


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    s = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), trusted_issuers={}, redis_url=None, database_url=None,
                 fhir_deadline_seconds=0.3)
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
        # Every outbound request is answered here: fuzzed fhirServer values never reach the network.
        mock.route(host="ehr.example.org").mock(side_effect=_patient_or_empty)
        mock.route().mock(return_value=httpx.Response(404))
        with TestClient(create_app(s), raise_server_exceptions=False) as c:
            yield c


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.one_of(mutated_bodies(), mutated_bodies(fhir=True)))
def test_random_request_shapes_never_get_a_5xx(fuzz_client, body):
    resp = fuzz_client.post(SELECT, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status_code < 500, (resp.status_code, resp.text, body)
    if resp.status_code >= 400:
        assert resp.json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- issue 11: odd input, 4xx not 5xx
@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00", "20261125",
                                   "2026-11-25", "2026-11-25T01:37:52", "2026-02-30T00:00:00Z"])
def test_feedback_timestamps_outside_rfc_3339_or_utc_are_a_400(client, stamp):
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": stamp}
    resp = client.post("/cds-services/neurosarcoidosis-order-select/feedback", json={"feedback": [item]})
    assert resp.status_code == 400 and "RFC 3339" in resp.text
    ok = client.post("/cds-services/neurosarcoidosis-order-select/feedback",
                     json={"feedback": [dict(item, outcomeTimestamp="2026-11-25T01:37:52+14:00")]})
    assert ok.status_code == 200  # the same connection goes on


@pytest.mark.parametrize("item, field", [
    ({"card": "c" * 65}, "card"),
    ({"overrideReason": {"userComment": "x" * 2001}}, "userComment"),
    ({"overrideReason": {"reason": {"code": "c" * 201}}}, "code"),
])
def test_feedback_fields_over_their_length_are_refused_not_cut(client, item, field):
    body = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z", **item}
    resp = client.post("/cds-services/neurosarcoidosis-order-select/feedback", json={"feedback": [body]})
    assert resp.status_code == 400 and field in resp.text


def test_a_large_body_written_whole_before_reading_still_gets_its_413(tmp_path):
    """A client that sends all 30 MB before it reads the answer sees the 413, not a reset."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CDS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "CDS_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "cds_service.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.2)
        body = b'{"a": "' + b"x" * (30 * 1024 * 1024) + b'"}'
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /cds-services/neurosarcoidosis-order-select HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            conn.sendall(body)  # all of it, before reading anything
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("build", [
    lambda b: b.record(b.patient(), b.ns(), b.weight(70), b.creatinine(0), drafts=[b.ivig_order()]),
    lambda b: b.record(b.patient(), b.ns(), b.weight(70), b.egfr(48), drafts=[b.ivig_order(g_per_day=1e308)]),
    lambda b: b.record(b.patient(), b.ns(), b.weight(0), b.height(0), b.egfr(48), drafts=[b.ivig_order()]),
    lambda b: b.record(b.patient(), b.ns(), b.weight(1e308), b.creatinine(1e308), b.height(1e-300),
                       drafts=[b.ivig_order(g_per_day=-5)]),
], ids=["creatinine-0", "dose-1e308", "weight-and-height-0", "huge-and-negative"])
def test_implausible_numbers_are_said_not_the_generic_card(build):
    from cds_service.response import evaluate_cards
    from tests import fhir_builders

    cards = evaluate_cards(build(fhir_builders), "order-select", "hi")
    rules = {c.extension["org.neurosarcoidosis-cds.rule-id"] for c in cards}
    assert "service.evaluation-failed" not in rules
    assert rules & {"ivig.dose", "ivig.dose.weight-missing"}  # the dose card is still there
    assert rules & {"ivig.safety.renal", "ivig.safety.renal-baseline-missing"}  # and the renal one
