"""The benchmark's own tools (bench/): request generator, floor app, fake FHIR server, driver, tables, budget.

No timing assertions here: speed is measured by ``python bench/run.py``, not by unit tests.
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import httpx
import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import gen, loaddrv, report  # noqa: E402
from cds_service.services import registry  # noqa: E402

PREFETCH = registry()["neurosarcoidosis-order-select"].prefetch

pytestmark = pytest.mark.skipif(not any(gen.SYNTHEA_DIR.glob("*.json")),
                                reason=f"no Synthea R4 bundles in {gen.SYNTHEA_DIR} (set BENCH_SYNTHEA_DIR)")


# --------------------------------------------------------------------------- request generator
@pytest.mark.parametrize("n", [10, 100, 1000])
def test_request_carries_the_asked_number_of_resources(n):
    request = gen.build_request(n)
    assert gen.count_prefetched(request) == n
    assert set(request["prefetch"]) == set(PREFETCH)  # every key the service asks for is answered


@pytest.mark.parametrize("n", [10, 100])
async def test_generated_request_is_accepted_by_the_service_validation(n):
    from cds_service.hooks import parse_call
    from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

    request = orjson.loads(orjson.dumps(gen.build_request(n)))  # exactly what goes over the wire
    call = parse_call(registry()[gen.SERVICE_ID], request)
    assert call.hook == "order-select"
    assert [o["id"] for o in call.draft_orders] == ["bench-draft-ivig"]
    assert call.selections == ["MedicationRequest/bench-draft-ivig"]
    policy = GatherPolicy(deadline_seconds=1.0)
    record = await gather(call, prefetch_only(call), policy)  # nothing missing: no FHIR server needed
    assert record.count() == n  # ids are unique, so nothing was de-duplicated away
    assert record.patient["id"] == gen.PATIENT_ID
    assert any(c["id"] == "bench-neurosarc" for c in record.resources["Condition"])


@pytest.mark.parametrize("n", [10, 100, 1000])
async def test_relapse_request_is_an_ivig_order_set_for_a_patient_relapsing_on_prednisone(n):
    from cds_service.hooks import parse_call
    from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

    request = orjson.loads(orjson.dumps(gen.build_request(n, shape="relapse")))
    assert gen.count_prefetched(request) == n
    assert set(request["prefetch"]) == set(PREFETCH)
    call = parse_call(registry()[gen.SERVICE_ID], request)
    ivig = next(o for o in call.draft_orders if o["id"] == "bench-draft-ivig")
    # the Medication inside the Bundle was resolved (carried inside the order), as for Epic's order sets
    med = next(c for c in ivig["contained"] if f"#{c['id']}" == ivig["medicationReference"]["reference"])
    assert med["code"]["coding"][0]["code"] == "J06BA02"
    assert call.selections == ["MedicationRequest/bench-draft-ivig"]
    assert len(call.draft_orders) >= 4  # premedication, saline and the prednisone re-escalation beside it
    policy = GatherPolicy(deadline_seconds=1.0)
    record = await gather(call, prefetch_only(call), policy)
    assert record.count() == n
    assert any(c["clinicalStatus"]["coding"][0]["code"] == "recurrence" for c in record.resources["Condition"])
    text = orjson.dumps(request).decode()
    assert "pt-07" not in text and "urn:uuid:" not in text  # every resource is about the bench patient


def test_relapse_record_is_moved_to_today():
    from datetime import date

    request = gen.build_request(100, shape="relapse", today=date(2030, 1, 15))
    ivig = request["context"]["draftOrders"]["entry"][1]["resource"]
    assert ivig["authoredOn"].startswith("2030-01-15")
    dated = [r["resource"].get("effectiveDateTime", "") for r in request["prefetch"]["observations"]["entry"]]
    assert max(d for d in dated if d) < "2030-01-15"


def test_filler_resources_point_at_the_bench_patient():
    resources = gen.prefetch_resources(200)
    for r in resources[1:]:
        assert r["subject"]["reference"] == f"Patient/{gen.PATIENT_ID}"
        assert "urn:uuid:" not in orjson.dumps(r).decode()


def test_prednisone_order_and_fallback_request_shapes():
    pred = gen.build_request(10, order="prednisone")
    draft = pred["context"]["draftOrders"]["entry"][0]["resource"]
    assert draft["medicationCodeableConcept"]["coding"][0]["code"] == "312615"
    fallback = gen.build_request(100, fhir_server="http://127.0.0.1:9/fhir", with_prefetch=False)
    assert "prefetch" not in fallback and fallback["fhirServer"] == "http://127.0.0.1:9/fhir"


def test_too_small_or_unknown_requests_are_refused():
    with pytest.raises(ValueError, match="at least"):
        gen.build_request(3)
    with pytest.raises(ValueError, match="order kind"):
        gen.build_request(10, order="aspirin")


def test_write_requests_writes_one_body_per_size(tmp_path):
    paths = gen.write_requests(tmp_path, (10, 20), fallback_server="http://127.0.0.1:9/fhir")
    assert sorted(paths) == ["req-10", "req-20", "req-fallback"]
    assert gen.count_prefetched(orjson.loads(paths["req-20"].read_bytes())) == 20


# --------------------------------------------------------------------------- floor app and fake FHIR server
async def test_bare_app_answers_with_a_card():
    from bench.bare_app import app

    body = orjson.dumps(gen.build_request(10))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        resp = await client.post(f"/cds-services/{gen.SERVICE_ID}", content=body,
                                 headers={"content-type": "application/json"})
    assert resp.status_code == 200
    cards = resp.json()["cards"]
    assert len(cards) == 1 and cards[0]["detail"] == f"{len(PREFETCH)} prefetch keys"


async def test_fake_fhir_answers_the_service_queries(monkeypatch):
    from bench import fake_fhir

    monkeypatch.setattr(fake_fhir, "DELAY", 0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake_fhir.app), base_url="http://fhir") as c:
        await c.delete("/_stats")
        patient = await c.get(f"/fhir/Patient/{gen.PATIENT_ID}")
        conditions = await c.get(f"/fhir/Condition?patient={gen.PATIENT_ID}")
        obs = await c.get("/fhir/" + PREFETCH["observations"].replace("{{context.patientId}}", gen.PATIENT_ID))
        missing = await c.get("/fhir/Patient/nobody")
        stats = (await c.get("/_stats")).json()
    assert patient.json()["id"] == gen.PATIENT_ID
    assert conditions.json()["type"] == "searchset" and conditions.json()["total"] > 0
    codes = {c["code"] for e in obs.json()["entry"] for c in e["resource"]["code"]["coding"]}
    assert "29463-7" in codes  # the bench weight comes back through the code-filtered search
    assert missing.status_code == 404
    assert stats["requests"] == 4


# --------------------------------------------------------------------------- load driver
async def test_driver_reads_a_content_length_response():
    reader = asyncio.StreamReader()
    reader.feed_data(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nwww-authenticate: Bearer\r\n\r\nno")
    assert await loaddrv._read_response(reader) == (401, b"no")


def test_driver_sends_one_token_per_request():
    raw = loaddrv._request_bytes("127.0.0.1:1", "/cds-services/x", b"{}", "tok-1")
    assert b"Authorization: Bearer tok-1\r\n" in raw and raw.endswith(b"\r\n\r\n{}")
    assert b"Authorization" not in loaddrv._request_bytes("127.0.0.1:1", "/x", b"{}", None)


def test_minted_tokens_have_unique_jti_and_the_called_url_as_audience():
    import jwt

    from bench.run import Minter

    minter = Minter()
    url = "http://127.0.0.1:8000/cds-services/x"
    for alg in ("ES384", "RS384"):
        tokens = minter.tokens(alg, url, 5)
        claims = [jwt.decode(t, options={"verify_signature": False}) for t in tokens]
        assert len({c["jti"] for c in claims}) == 5
        assert {c["aud"] for c in claims} == {url}
        assert jwt.get_unverified_header(tokens[0])["kid"] in {k["kid"] for k in minter.jwks["keys"]}


# --------------------------------------------------------------------------- tables and budget
def test_markdown_table_formats_numbers_and_checks_shape():
    text = report.markdown_table(["what", "req/s", "p50 ms"], [("service", 1234.5, 0.456), ("bare", 3000, math.nan)])
    lines = text.splitlines()
    assert lines[0] == "| what | req/s | p50 ms |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| service | 1,234 | 0.46 |"
    assert lines[3] == "| bare | 3,000 | – |"
    with pytest.raises(ValueError):
        report.markdown_table(["a", "b"], [("only one",)])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert math.isnan(report.percentile([], 50))


H2LOAD_OUT = """finished in 5.00s, 1871.50 req/s, 559.26KB/s
requests: 9358 total, 9366 started, 9358 done, 9356 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 9356 2xx, 0 3xx, 2 4xx, 0 5xx
"""


def test_h2load_and_wrk_output_are_parsed():
    lines = ["1795645520631798\t200\t3000", "1795645520631857\t200\t1000", "1795645520631860\t401\t2000"]
    r = report.parse_h2load(H2LOAD_OUT, lines)
    assert r.rps == 1871.5 and r.requests == 9356
    assert r.errors == 4  # 2 failed + 2 non-2xx
    assert r.p50_ms == 2.0
    w = report.parse_wrk("  56100 requests in 3.00s, 10.1MB read\n  Non-2xx or 3xx responses: 3\n"
                         "Requests/sec:  18700.12\n")
    assert w.rps == 18700.12 and w.errors == 3
    with pytest.raises(ValueError):
        report.parse_h2load("connection refused", [])


def _results(ratio: float, p99_ratio: float, small_ratio: float, errors: int, auth_ratio: float, fallback_p50: float,
             cold: float) -> dict:
    def row(rps_ratio: float) -> dict:
        return {"services": {"service": {"rps_ratio": rps_ratio, "rps_ratio_min": rps_ratio, "rps_ratio_max": rps_ratio,
                                         "p99_ratio": p99_ratio, "p99_ratio_min": p99_ratio,
                                         "p99_ratio_max": p99_ratio, "svc_errors": errors, "svc_requests": 1000}}}

    prefetch = {f"{shape}/{n}/8": row(ratio if n == 100 else small_ratio)
                for shape in ("synthea", "relapse") for n in (10, 100)}
    jwt = {8: {"service+JWT ES384": {"vs_auth_off": auth_ratio, "vs_auth_off_min": auth_ratio,
                                     "vs_auth_off_max": auth_ratio}}}
    return {"prefetch": prefetch, "jwt": {"runs": jwt},
            "fallback": {"delay_ms": 50.0, "keys": 8, "runs": {1: {"p50_ms": fallback_p50, "errors": 0}}},
            "cold_start": {"service": {"first_ms": cold}}}


def test_budget_verdicts():
    from bench.run import budget, parse_args

    args = parse_args([])
    good = budget(_results(0.45, 2.0, 0.35, 0, 0.85, 60.0, 900.0), args)
    assert [ok for *_, ok in good] == [True] * 10
    bad = budget(_results(0.2, 5.0, 0.2, 1, 0.5, 260.0, 2000.0), args)
    assert [ok for *_, ok in bad] == [False] * 10


# --------------------------------------------------------------------------- callgrind stage counts
def test_callgrind_dumps_are_read_as_instructions_per_call_by_stage(tmp_path):
    from bench.callgrind_stages import per_call

    (tmp_path / "callgrind.out.7.1").write_text("desc: Trigger: Client Request: asgi\nevents: Ir\ntotals: 4000\n")
    (tmp_path / "callgrind.out.7.2").write_text("desc: Trigger: Client Request: facts\ntotals: 1000\n")
    (tmp_path / "callgrind.out.7").write_text("desc: Trigger: Program termination\ntotals: 0\n")
    assert per_call(tmp_path, calls=20) == {"asgi": 200, "facts": 50}


# --------------------------------------------------------------------------- outside.py
def test_outside_splits_the_server_cpu_into_the_call_the_audit_writer_and_the_loop():
    from bench import outside

    probes = {"kinds": {"request": [100, 0.250, 0.400], "audit writer": [5, 0.004, 0.006]},
              "request_cpu": [0.0025] * 100, "gc": [(0, 0.001)],
              "request_span": [(0.0, 1.0), (0.1, 0.2), (0.3, 0.4), (0.5, 1.1), (1.2, 1.3)]}
    threads = {"1 python": 0.270, "2 python": 0.005, "3 libuv-worker": 0.0}
    rows = dict(outside.breakdown(probes, threads, [20_000] * 99 + [90_000]))
    assert rows["whole process, CPU µs/req"] == "2,750"
    assert rows["  the ASGI call (request tasks), µs/req"] == "2,500"
    assert rows["  audit writer on the event loop, µs/req"] == "40"
    assert rows["  rest of the loop's thread (uvloop, HTTP parsing, socket I/O), µs/req"] == "160"  # 270 - 250 - 4 ms
    assert rows["  thread 2 python (the SQLite audit writer's, with the embedded store), µs/req"] == "50"
    assert rows["  garbage collections, within the rows above (count; CPU µs/req)"] == "1; 10.0"
    assert rows["request steps off the CPU (wall - CPU), µs/req"] == "1,500"
    assert rows["latency p50 / p99 / max, ms"] == "20.00 / 90.00 / 90.00"
    assert rows["most requests answered while one was in the server"] == "2"  # the first, overtaken twice


def test_decode_bench_reads_both_shapes_and_keeps_what_the_engine_reads(tmp_path):
    from bench import decode

    request = gen.build_request(10, shape="relapse")
    body = orjson.dumps(request)
    statements = [e["resource"] for b in request["prefetch"].values() if b and b.get("resourceType") == "Bundle"
                  for e in b.get("entry", []) if e["resource"]["resourceType"] == "MedicationStatement"]
    assert statements
    for make in (decode.read_fields_decoder, decode.typed_decoder, decode.ids_only_decoder):
        decoded = make().decode(body)
        kept = [e.resource for b in decoded.prefetch.values() if b is not None and hasattr(b, "entry")
                for e in b.entry if type(e.resource).__name__ == "MedicationStatement"]
        assert [r.id for r in kept] == [s["id"] for s in statements]
    read = decode.read_fields_decoder().decode(body)
    first = next(e.resource for b in read.prefetch.values() if b is not None and hasattr(b, "entry")
                 for e in b.entry if type(e.resource).__name__ == "MedicationStatement")
    assert first.medicationCodeableConcept == statements[0]["medicationCodeableConcept"]
    out = tmp_path / "decode.json"
    decode.main(["--sizes", "10", "--shapes", "synthea", "--reps", "1", "--json", str(out)])
    (row,) = orjson.loads(out.read_bytes())
    assert set(row["us"]) == {"orjson", "read fields", "typed", "ids only"} and all(v > 0 for v in row["us"].values())
