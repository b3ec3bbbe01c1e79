"""Prefetch, FHIR-server fallback and posted-bundle sources, and how gather() combines them."""

import asyncio

import httpx
import pytest
import respx

from cds_service.errors import BadRequest, PreconditionFailed
from cds_service.hooks import parse_call
from cds_service.services import registry
from cds_service.sources.bundle import BundleSource, request_from_bundle
from cds_service.sources.gather import GatherPolicy, call_sources, gather, prefetch_queries, queries_for
from cds_service.sources.prefetch import PrefetchSource

PREFETCH = registry()["neurosarcoidosis-order-select"].prefetch

FHIR = "https://ehr.example.org/fhir"
SELECT = registry()["neurosarcoidosis-order-select"]
SIGN = registry()["neurosarcoidosis-order-sign"]


def searchset(*resources, next_url=None):
    b = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def condition(cid):
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "230193008"}]}}


def call(prefetch=None, fhir_server=FHIR, token="secret-access-token"):
    body = {
        "hook": "order-select", "hookInstance": "h1",
        "context": {"patientId": "p1", "userId": "Practitioner/u1", "selections": [],
                    "draftOrders": {"resourceType": "Bundle", "entry": []}},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/*.read", "subject": "cds"}
    return parse_call(SELECT, body)


FULL = {"patient": {"resourceType": "Patient", "id": "p1"}, "conditions": searchset(condition("c1")),
        "medicationStatements": searchset(), "medicationRequests": searchset(), "observations": searchset(),
        "allergies": searchset(), "medicationAdministrations": searchset(), "devices": searchset(),
        "encounters": searchset()}


def run(coro):
    return asyncio.run(coro)


async def fetch(c, http=None, deadline=1.0, fhir_allowed=None, **policy):
    policy = GatherPolicy(deadline_seconds=deadline, **policy)
    return await gather(c, call_sources(c, policy, http, fhir_allowed=fhir_allowed), policy)


def test_templates_use_only_2_0_1_tokens():
    for template in PREFETCH.values():
        assert "{{" not in template.replace("{{context.patientId}}", "")
    assert queries_for(call())["patient"] == "Patient/p1"


def test_site_templates_are_filled_token_by_token_as_written():
    templates = {
        "plain": "MedicationRequest?patient={{context.patientId}}&subject=Patient/{{context.patientId}}",
        "spaced": "Observation?patient={{ context.patientId }}&performer={{userPractitionerId}}",
        "context": "Encounter/{{context.encounterId}}",
        "braces": "X?p={{{context.patientId}}}&q={{unknown}}&r={{context.patientId}}",
        "none": "Device?type=catheter",
    }
    queries = prefetch_queries(templates, {"encounterId": "e 1"}, "p/1 &x", "Practitioner/u 1")
    pid = "p%2F1%20%26x"  # percent-encoded: a caller's id cannot change the query
    assert queries == {
        "plain": f"MedicationRequest?patient={pid}&subject=Patient/{pid}",
        "spaced": f"Observation?patient={pid}&performer=u%201",
        "context": "Encounter/e%201",
        "braces": f"X?p={{{pid}}}&q={{{{unknown}}}}&r={pid}",
        "none": "Device?type=catheter",
    }


def test_null_means_known_empty_and_is_never_fetched():
    prefetch = dict(FULL, conditions=None)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(500))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1))
    assert not route.called
    assert record.resources.get("Condition") is None and record.patient["id"] == "p1"


def test_resources_of_another_patient_are_left_out_and_said():
    other = dict(condition("c2"), subject={"reference": "https://ehr.example.org/fhir/Patient/p2"})
    by_urn = dict(condition("c3"), subject={"reference": "urn:uuid:4f1c"})  # names no Patient: kept
    prefetch = dict(FULL, conditions=searchset(condition("c1"), other, by_urn))
    record = run(fetch(call(prefetch, fhir_server=None)))
    assert [c["id"] for c in record.resources["Condition"]] == ["c1", "c3"]
    assert "left out 1 resource(s) about another patient" in " ".join(record.notes)
    assert "p2" not in " ".join(record.notes)  # no identifier in what reaches the cards
    someone_else = dict(FULL, patient={"resourceType": "Patient", "id": "p2", "birthDate": "1950-01-01"})
    record = run(fetch(call(someone_else, fhir_server=None)))
    assert record.patient is None  # never another patient's age and sex


def test_a_large_fhir_answer_is_parsed_off_the_event_loop(monkeypatch):
    import threading

    from cds_service.sources import fhir_server

    threads = []
    real = fhir_server.FhirServerSource._parse

    def parse(self, raw):
        threads.append((len(raw), threading.current_thread() is threading.main_thread()))
        return real(self, raw)

    monkeypatch.setattr(fhir_server.FhirServerSource, "_parse", parse)
    big = searchset(*(dict(condition(f"c{i}"), note=[{"text": "x" * 2000}]) for i in range(400)))
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=f"{FHIR}/Condition").mock(return_value=httpx.Response(200, json=big))
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=searchset()))
        record = run(fetch(call({"patient": FULL["patient"]}), http=httpx.AsyncClient(), deadline=5))
    assert len(record.resources["Condition"]) == 400
    large = [on_loop for size, on_loop in threads if size > fhir_server.LARGE_ANSWER_BYTES]
    small = [on_loop for size, on_loop in threads if size <= fhir_server.LARGE_ANSWER_BYTES]
    assert large == [False] and small and all(small)


def test_missing_keys_are_fetched_in_parallel_with_the_bearer_token():
    prefetch = {"patient": FULL["patient"]}
    seen = []

    def answer(request):
        seen.append(request)
        if request.url.path.endswith("/Condition"):
            return httpx.Response(200, json=searchset(condition("c9")))
        return httpx.Response(200, json=searchset())

    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(side_effect=answer)
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1))
    assert len(seen) == 8  # 4 required searches + 4 optional ones, all at once
    assert all(r.headers["authorization"] == "Bearer secret-access-token" for r in seen)
    assert [c["id"] for c in record.resources["Condition"]] == ["c9"]


def test_operation_outcome_prefetch_value_is_fetched_again():
    prefetch = dict(FULL, conditions={"resourceType": "OperationOutcome", "issue": []})
    with respx.mock as mock:
        route = mock.get(f"{FHIR}/Condition", params={"patient": "p1"}).mock(
            return_value=httpx.Response(200, json=searchset(condition("c2"))))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1))
    assert route.called and record.resources["Condition"][0]["id"] == "c2"


def test_next_pages_are_followed_up_to_the_bound():
    prefetch = dict(FULL, conditions=searchset(condition("c1"), next_url=f"{FHIR}/Condition?page=2"))
    with respx.mock as mock:
        mock.get(f"{FHIR}/Condition", params={"page": "2"}).mock(
            return_value=httpx.Response(200, json=searchset(condition("c2"), next_url=f"{FHIR}/Condition?page=3")))
        mock.get(f"{FHIR}/Condition", params={"page": "3"}).mock(
            return_value=httpx.Response(200, json=searchset(condition("c3"), next_url=f"{FHIR}/Condition?page=4")))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1, max_pages=2))
    assert [c["id"] for c in record.resources["Condition"]] == ["c1", "c2", "c3"]


def test_next_link_to_another_host_is_refused():
    prefetch = dict(FULL, conditions=searchset(condition("c1"), next_url="https://evil.example.com/steal"))
    with respx.mock(assert_all_called=False) as mock:
        evil = mock.get(url__startswith="https://evil.example.com").mock(return_value=httpx.Response(200))
        with pytest.raises(PreconditionFailed, match="another host"):
            run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1))
    assert not evil.called


def test_optional_keys_that_fail_become_a_note_not_a_412():
    prefetch = {k: v for k, v in FULL.items() if k not in ("allergies", "devices")}
    with respx.mock as mock:
        mock.get(f"{FHIR}/AllergyIntolerance").mock(return_value=httpx.Response(200, json=searchset(
            {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}})))
        mock.get(f"{FHIR}/Device").mock(return_value=httpx.Response(400))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), deadline=1))
    assert record.resources["AllergyIntolerance"][0]["id"] == "a1"
    assert any("devices" in n for n in record.notes)


def test_optional_keys_without_fhir_server_are_noted():
    prefetch = {k: v for k, v in FULL.items() if k != "devices"}
    record = run(fetch(call(prefetch, fhir_server=None), http=None, deadline=1))
    assert any("devices" in n for n in record.notes)


def test_no_prefetch_and_no_fhir_server_is_412():
    with pytest.raises(PreconditionFailed, match="no fhirServer"):
        run(fetch(call({"patient": FULL["patient"]}, fhir_server=None), http=None, deadline=1))


@pytest.mark.parametrize("response", [httpx.Response(500), httpx.Response(401), httpx.Response(200, text="<html>")])
def test_fhir_server_errors_are_412(response):
    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=response)
        with pytest.raises(PreconditionFailed):
            run(fetch(call({}), http=httpx.AsyncClient(), deadline=1))


def test_slow_fhir_server_hits_the_deadline():
    async def slow(request):
        await asyncio.sleep(2)
        return httpx.Response(200, json=searchset())

    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(side_effect=slow)
        with pytest.raises(PreconditionFailed, match="within 0.2 s"):
            run(fetch(call({}), http=httpx.AsyncClient(), deadline=0.2))


def test_redirects_are_not_followed():
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=FHIR).mock(
            return_value=httpx.Response(302, headers={"location": "https://evil.example.com/x"}))
        evil = mock.get(url__startswith="https://evil.example.com").mock(return_value=httpx.Response(200))
        with pytest.raises(PreconditionFailed, match="302"):
            run(fetch(call({}), http=httpx.AsyncClient(), deadline=1))
    assert not evil.called


def test_anonymous_fetch_when_no_token_like_the_sandbox():
    with respx.mock as mock:
        route = mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=searchset()))
        run(fetch(call({"patient": FULL["patient"]}, token=None), http=httpx.AsyncClient(), deadline=1))
    assert route.call_count == 8 and "authorization" not in route.calls[0].request.headers


def test_prefetch_value_of_wrong_type_is_400():
    with pytest.raises(BadRequest, match="prefetch.conditions"):
        PrefetchSource({"conditions": "nope"}).answer({"conditions": "Condition?patient=p1"})


def test_epic_empty_search_with_outcome_entry_is_an_empty_result():
    epic_empty = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": [
        {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}}]}
    record = run(fetch(call(dict(FULL, conditions=epic_empty)), http=None, deadline=1))
    assert "Condition" not in record.resources


def test_fhir_allow_list_refuses_before_any_request():
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=searchset()))
        with pytest.raises(PreconditionFailed, match="allow-list"):
            run(fetch(call({}), http=httpx.AsyncClient(), deadline=1, fhir_allowed=lambda url: False))
    assert not route.called


BUNDLE = {
    "resourceType": "Bundle", "type": "collection", "timestamp": "2026-11-25T09:00:00Z",
    "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1"}},
        {"resource": condition("c1")},
        {"resource": {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"},
                      "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}}},
        {"resource": {"resourceType": "Observation", "id": "o2", "subject": {"reference": "Patient/p1"},
                      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}},
        {"resource": {"resourceType": "MedicationRequest", "id": "rx1", "status": "draft", "intent": "order",
                      "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "IVIG"}}},
    ],
}


def test_request_from_bundle_builds_what_an_ehr_sends():
    req = request_from_bundle(BUNDLE, SELECT)
    ctx = req["context"]
    assert ctx["patientId"] == "p1" and ctx["selections"] == ["MedicationRequest/rx1"]
    assert ctx["draftOrders"]["entry"][0]["resource"]["id"] == "rx1"
    assert [e["resource"]["id"] for e in req["prefetch"]["observations"]["entry"]] == ["o1"]  # code filter
    assert req["prefetch"]["medicationRequests"]["entry"] == []  # the draft travels in context only
    assert "selections" not in request_from_bundle(BUNDLE, SIGN)["context"]


@pytest.mark.parametrize("bundle, message", [
    ({"resourceType": "Patient"}, "Bundle"),
    ({"resourceType": "Bundle", "entry": []}, "non-empty"),
    ({"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}, r"entry\[0\]"),
    ({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "a"}}, "junk"]},
     r"entry\[1\]"),
])
def test_bad_bundles_name_the_wrong_entry(bundle, message):
    with pytest.raises(BadRequest, match=message):
        request_from_bundle(bundle, SELECT)


def test_bundle_source_reads_by_id():
    src = BundleSource([{"resourceType": "Patient", "id": "p1"}], "p1")
    assert src.answer({"patient": "Patient/p1", "missing": "Patient/p2"}) == {
        "patient": {"resourceType": "Patient", "id": "p1"}, "missing": None}


def test_record_tolerates_junk_entries_and_keeps_order_and_dedupes():
    from cds_service.clinical.record import PatientRecord

    rec = PatientRecord(patient_id="p1")
    rec.add({"resourceType": "Bundle", "entry": [
        "junk", {"resource": 5}, {"resource": condition("c1"), "search": "weird"},
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
        {"resource": condition("c1")}, {"resource": {"resourceType": "Patient", "id": "p1"}},
        {"resource": {"resourceType": "Bundle", "entry": [{"resource": condition("c2")}]}},
        {"resource": {"id": "no-type"}},
    ]})
    assert [c["id"] for c in rec.resources["Condition"]] == ["c1", "c2"]
    assert rec.patient["id"] == "p1" and any("without resourceType" in n for n in rec.notes)


# --------------------------------------------------------------------------- hostile FHIR answers
def _source(max_bytes=1000, **kw):
    from cds_service.sources.fhir_server import FhirServerSource

    return FhirServerSource(httpx.AsyncClient(), FHIR, max_bytes=max_bytes, **kw)


def test_oversized_fhir_answer_is_refused_while_streaming_without_reading_it_all():
    from cds_service.sources.base import SourceError

    sent = []

    async def endless():
        for _ in range(10_000):  # 10 MB if read to the end
            sent.append(1)
            yield b" " * 1024

    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, content=endless()))
        with pytest.raises(SourceError, match="too large"):
            run(_source(max_bytes=8 * 1024).fetch_one("Condition?patient=p1"))
    assert len(sent) < 20  # stopped just past the cap, not after 10,000 chunks


def test_fhir_answer_declaring_a_length_over_the_cap_is_refused_unread():
    from cds_service.sources.base import SourceError

    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(
            200, content=b"{}" * 1000, headers={"content-length": "2000"}))
        with pytest.raises(SourceError, match="too large"):
            run(_source(max_bytes=1000).fetch_one("Patient/p1"))


def test_fhir_answer_within_the_cap_is_read_whole():
    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=searchset(condition("c1"))))
        data = run(_source(max_bytes=10_000).fetch_one("Condition?patient=p1"))
    assert data["entry"][0]["resource"]["id"] == "c1"


def test_deeply_nested_fhir_answer_is_a_412_naming_the_bounds():
    deep: dict = {"resourceType": "Patient", "id": "p1"}
    node = deep
    for _ in range(100):
        node["extension"] = [{"url": "x"}]
        node = node["extension"][0]
    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=deep))
        with pytest.raises(PreconditionFailed, match="bounds"):
            run(fetch(call({k: v for k, v in FULL.items() if k != "patient"}), http=httpx.AsyncClient(),
                       deadline=1))


def test_fhir_answer_with_an_over_long_array_is_a_412():
    big = searchset(*[condition(f"c{i}") for i in range(30)])
    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=big))
        with pytest.raises(PreconditionFailed, match="longer than 20"):
            run(fetch(call({k: v for k, v in FULL.items() if k != "conditions"}), http=httpx.AsyncClient(),
                       deadline=1, max_array=20))


async def test_a_fully_prefetched_call_is_gathered_without_yielding_to_the_event_loop():
    """Calls that yield mid-request are interleaved under load: eight calls' parsed requests alive at once,
    each costing about twice the CPU at c=8. With everything prefetched there is nothing to wait for."""
    c = call(FULL)
    coro = fetch(c, http=httpx.AsyncClient())
    with pytest.raises(StopIteration) as done:
        coro.send(None)  # one step: it must finish without suspending
    assert done.value.value.patient["id"] == "p1"
