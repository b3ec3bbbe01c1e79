"""A local stand-in for the EHR's FHIR server: answers each read/search after a fixed delay.

Used by the FHIR-fallback scenario (a hook call with ``fhirServer`` and no ``prefetch``) and as the
JWKS host of the JWT scenario. The data is the benchmark's generated patient (``bench.gen``); searches
are answered with the same matching logic the service uses for developer bundles, so the Observation
search returns only the LOINC codes asked for.

Environment: ``BENCH_FHIR_DELAY_MS`` (default 50) per answer, ``BENCH_FHIR_RESOURCES`` (default 100)
resources in the record, ``BENCH_JWKS_FILE`` (optional) a JWKS document served at ``/jwks.json``.
``GET /_stats`` returns how many FHIR requests were served and the most that were in flight at once —
the evidence that the service fetches its prefetch keys in parallel.

Run: ``python -m uvicorn bench.fake_fhir:app --port 8099``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.gen import PATIENT_ID, prefetch_resources
from cds_service.sources.bundle import BundleSource

DELAY = float(os.environ.get("BENCH_FHIR_DELAY_MS", "50")) / 1000
RESOURCES = int(os.environ.get("BENCH_FHIR_RESOURCES", "100"))
FHIR_JSON = "application/fhir+json"

_source = BundleSource(prefetch_resources(RESOURCES, PATIENT_ID), PATIENT_ID)
_stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0}


async def fhir(request: Request) -> Response:
    _stats["requests"] += 1
    _stats["in_flight"] += 1
    _stats["max_in_flight"] = max(_stats["max_in_flight"], _stats["in_flight"])
    try:
        await asyncio.sleep(DELAY)
        query = request.path_params["path"]
        if request.url.query:
            query += "?" + request.url.query
        answer = _source.answer({"q": query})["q"]
        if answer is None:
            return Response(orjson.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found"}]}), status_code=404, media_type=FHIR_JSON)
        return Response(orjson.dumps(answer), media_type=FHIR_JSON)
    finally:
        _stats["in_flight"] -= 1


async def stats(request: Request) -> Response:
    if request.method == "DELETE":
        _stats.update(requests=0, max_in_flight=0)
    return Response(orjson.dumps(_stats), media_type="application/json")


def jwks(request: Request) -> Response:  # sync: Starlette runs it in a thread (file read)
    path = os.environ.get("BENCH_JWKS_FILE")
    if not path or not Path(path).exists():
        return Response(b'{"keys":[]}', status_code=404, media_type="application/json")
    return Response(Path(path).read_bytes(), media_type="application/json")


app = Starlette(routes=[
    Route("/_stats", stats, methods=["GET", "DELETE"]),
    Route("/jwks.json", jwks),
    Route("/fhir/{path:path}", fhir),
])
