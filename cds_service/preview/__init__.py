"""Developer preview: post a FHIR fixture bundle and see the cards an EHR would show.

* ``POST /fixtures/evaluate?hook=order-select|order-sign|patient-view[&order=MedicationRequest/x]`` — the bundle is
  turned into the CDS Hooks request an EHR would send (:func:`cds_service.evaluate.build_request`) and
  evaluated; the answer holds that request, the CDS Hooks response, and a ``preview`` part (sanitised
  detail HTML, http(s)-only links) that is never part of a CDS Hooks response.
* ``GET /fixtures`` and ``GET /fixtures/{name}`` — the fixture bundles shipped with the package.
* ``GET /`` and ``GET /preview`` — a card preview page (plain HTML, CSS and one script, served from
  this package: no build step, no CDN, works offline) under a strict Content-Security-Policy.

All of it is off (404) when authentication is on, unless ``CDS_ENABLE_FIXTURE_ENDPOINT=true``; then
the JSON endpoints demand the same JWT as the hook endpoints, with the path as audience.
"""

from __future__ import annotations

import re
from importlib import resources as _ilr
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from starlette.responses import Response

from cds_service import logs
from cds_service.auth import authenticate
from cds_service.body import read_json
from cds_service.config import Settings
from cds_service.errors import BadRequest, NotFound
from cds_service.evaluate import build_request, evaluate_request_async, service_for
from cds_service.preview.fixtures import list_fixtures, load_fixture
from cds_service.preview.validate import validate_bundle

log = logs.get_logger("cds_service.preview")



def _preview_cards():
    """The Markdown renderer, loaded when a preview is first asked for (not at service start)."""
    from cds_service.preview.markdown import preview_cards

    return preview_cards


ORDER_RE = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")

# The page loads only its own script, stylesheet and JSON; no inline script or style can run, so even
# a card text that slipped past the sanitiser could not execute.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
STATIC_FILES = {  # an allow-list, so no path from the URL ever reaches the file system
    "preview.css": "text/css; charset=utf-8",
    "preview.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _static(name: str) -> bytes:
    return (_ilr.files("cds_service.preview") / "static" / name).read_bytes()


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.fixture_endpoint_enabled:
        # With authentication on, a bundle-in/cards-out endpoint is a way around the EHR's controls;
        # leave every route out so the paths answer 404 like any unknown path.
        return

    @app.post("/fixtures/evaluate", tags=["Developer preview"],
              summary="Evaluate a FHIR R4 Bundle as if an EHR had sent it",
              responses={400: {}, 401: {}, 413: {}, 415: {}})
    async def evaluate_fixture(
        request: Request,
        hook: str = Query(
            "order-select", description="The hook to simulate, one of those the services answer (discovery): "
                                        "order-select, order-sign, or patient-view (the chart as it stands; no "
                                        "order is placed)"),
        order: str | None = Query(None, description="The order to place, e.g. MedicationRequest/ivig-1 "
                                                     "(default: every draft order in the bundle; ignored for "
                                                     "a hook that places no order)"),
    ) -> Response:
        await authenticate(request, "/fixtures/evaluate")
        if not service_for(hook, settings).places_orders:
            order = None
        if order is not None and not ORDER_RE.match(order):
            raise BadRequest("order must be a reference such as 'MedicationRequest/ivig-1'.")
        bundle = await read_json(request, limit=settings.max_body_bytes, max_depth=settings.max_json_depth,
                                 max_array=settings.max_array_length)
        validate_bundle(bundle)
        cds_request = build_request(bundle, hook, order, settings)
        response = await evaluate_request_async(cds_request, hook, str(request.base_url), settings)
        # Not audited and not counted in the hook metrics: a developer's fixture is not a clinical call.
        log.info("fixture_evaluated", hook=hook, cards=len(response.get("cards") or []))
        return _json({"request": cds_request, "response": response,
                      "preview": {"cards": _preview_cards()(response, launcher=settings.smart_preview_launcher,
                                                         patient_id=cds_request["context"].get("patientId"))}})

    @app.get("/fixtures", tags=["Developer preview"], summary="The fixture bundles shipped with the service")
    async def fixtures(request: Request) -> Response:
        await authenticate(request, "/fixtures")
        return _json({"fixtures": list_fixtures()})

    @app.get("/fixtures/{name}", tags=["Developer preview"], summary="One shipped fixture bundle",
             responses={404: {}})
    async def fixture(name: str, request: Request) -> Response:
        await authenticate(request, f"/fixtures/{name}")
        return _json(load_fixture(name))

    async def page() -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    # The page holds no data (it fetches everything with the caller's rights), so it needs no token.
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/preview", page, methods=["GET"], include_in_schema=False)

    @app.get("/preview/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise NotFound(f"No resource at /preview/static/{name[:80]}.")
        return Response(_static(name), media_type=media_type, headers=PAGE_HEADERS)
