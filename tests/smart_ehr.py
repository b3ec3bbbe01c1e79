"""A small test EHR for the treatment timeline: SMART authorization server, FHIR facade and EHR page.

It plays every part of an EHR the SMART launch touches, over the fixture patients (``fixtures/fhir`` and
``fixtures/longitudinal/fhir``, draft orders left out):

* ``GET  /fhir/.well-known/smart-configuration`` — discovery (PKCE S256, launch-ehr, public and
  ``private_key_jwt`` clients, SMART v2 scopes);
* ``GET  /auth/authorize`` — the authorization request, checked like an EHR checks it (registered client
  and redirect URI, ``aud``, a known ``launch``, PKCE with S256 only), answered at once with a code (the
  clinician is signed in to the EHR already);
* ``POST /auth/token`` — the code for a token: single use, PKCE verifier, redirect URI, client (``client_id``
  or a signed ``client_assertion``); the token response carries ``patient`` and ``appContext``;
* ``GET  /fhir/{type}/{id}``, ``GET /fhir/{type}?patient=…`` (and ``POST /fhir/{type}/_search``) — FHIR reads
  for the token's patient only, paged; ``/fhir/metadata``;
* ``POST /fhir/_services/smart/Launch`` — how the CDS Hooks sandbox asks a FHIR server for a launch id;
* ``GET  /ehr/launch?app=…&patient=…&appContext=…`` — a launcher: makes a launch id and opens the app
  (``app?launch=…&iss=…``), as an EHR does when a card's smart link is clicked;
* ``GET  /ehr?patient=…`` — an EHR page: calls the CDS service's order-select hook for the patient's draft
  order and shows the cards, the smart link opening the app in an iframe (``frame=1``) or in the page.

Tests run it with uvicorn on 127.0.0.2 while the service runs on 127.0.0.1, so the app is cross-site.
Attributes the tests change to make it misbehave: ``pkce_methods``, ``refuse_types``, ``broad_search``
(searches ignore ``patient``), ``page_size``. ``open_fhir`` answers FHIR reads without a token too, as
the public CDS Hooks sandbox needs (it supports open FHIR servers only); the command line turns it on.
For a developer (the card preview page, the public sandbox)::

    python -m tests.smart_ehr --host 127.0.0.2 --port 9000 --cds http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import time
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

REPO = Path(__file__).resolve().parent.parent
FIXTURE_DIRS = (REPO / "fixtures" / "fhir", REPO / "fixtures" / "longitudinal" / "fhir")
CLIENT_ID = "ns-timeline"
SERVICE = "neurosarcoidosis-order-select"
_PATIENT_FIELDS = ("subject", "patient")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_patients(dirs=FIXTURE_DIRS) -> tuple[dict[str, dict[str, list[dict]]], dict[str, dict]]:
    """patient id -> resource type -> resources (draft orders left out); patient id -> its whole Bundle."""
    patients: dict[str, dict[str, list[dict]]] = {}
    bundles: dict[str, dict] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.json")):
            bundle = json.loads(path.read_text(encoding="utf-8"))
            resources = [e["resource"] for e in bundle.get("entry", [])]
            pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
            bundles[pid] = bundle
            by_type = patients.setdefault(pid, {})
            for res in resources:
                if res.get("status") == "draft":
                    continue
                by_type.setdefault(res["resourceType"], []).append(res)
    return patients, bundles


def _patient_of(res: dict[str, Any]) -> str | None:
    if res.get("resourceType") == "Patient":
        return res.get("id")
    for name in _PATIENT_FIELDS:
        ref = res.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"].rsplit("/", 1)[-1]
    return None


class SmartEHR:
    def __init__(self, base_url: str, *, clients: dict[str, dict[str, Any]] | None = None,
                 cds_base: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.fhir = self.base + "/fhir"
        self.clients = clients if clients is not None else {}
        self.cds_base = cds_base
        self.patients, self.bundles = load_patients()
        self.launches: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.used_codes: set[str] = set()
        # knobs for tests
        self.pkce_methods = ["S256"]
        self.refuse_types: set[str] = set()
        self.broad_search = False
        self.page_size = 50
        self.open_fhir = False
        self.slow_types: dict[str, float] = {}  # resource type -> seconds a search of it takes
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.fhir_requests: list[str] = []

    # ------------------------------------------------------------------------------------------ launch
    def new_launch(self, patient: str, app_context: str | None = None, launch_url: str | None = None) -> str:
        launch = secrets.token_urlsafe(16)
        self.launches[launch] = {"patient": patient, "appContext": app_context, "launchUrl": launch_url,
                                 "at": time.time()}
        return launch

    def configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.base,
            "authorization_endpoint": self.base + "/auth/authorize",
            "token_endpoint": self.base + "/auth/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
            "grant_types_supported": ["authorization_code"],
            "scopes_supported": ["launch", "patient/*.rs", "openid", "fhirUser"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": list(self.pkce_methods),
            "capabilities": ["launch-ehr", "client-public", "client-confidential-asymmetric",
                             "context-ehr-patient", "permission-v2", "permission-patient"],
        }

    async def smart_configuration(self, request: Request) -> Response:
        return JSONResponse(self.configuration())

    async def sandbox_launch(self, request: Request) -> Response:
        body = await request.json()
        params = body.get("parameters") or {}
        return JSONResponse({"launch_id": self.new_launch(params.get("patient"), params.get("appContext"),
                                                          body.get("launchUrl"))})

    async def launcher(self, request: Request) -> Response:
        q = request.query_params
        app, patient = q.get("app"), q.get("patient")
        if not app or patient not in self.patients:
            return JSONResponse({"error": "app and a known patient are needed"}, status_code=400)
        launch = self.new_launch(patient, q.get("appContext"), app)
        sep = "&" if "?" in app else "?"
        return RedirectResponse(f"{app}{sep}{urlencode({'launch': launch, 'iss': self.fhir})}", status_code=302)

    # ------------------------------------------------------------------------------------------ oauth
    def _auth_error(self, redirect_uri: str, state: str | None, error: str) -> Response:
        query = {"error": error, **({"state": state} if state else {})}
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    async def authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        client = self.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        if client is None or redirect_uri not in client["redirect_uris"]:
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)  # never redirect then
        state = q.get("state")
        if q.get("response_type") != "code" or not state:
            return self._auth_error(redirect_uri, state, "invalid_request")
        if q.get("code_challenge_method") not in self.pkce_methods or not q.get("code_challenge"):
            return self._auth_error(redirect_uri, state, "invalid_request")
        if q.get("aud") != self.fhir:
            return self._auth_error(redirect_uri, state, "invalid_request")
        launch = self.launches.get(q.get("launch", ""))
        if launch is None or "launch" not in q.get("scope", "").split():
            return self._auth_error(redirect_uri, state, "invalid_request")
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"client_id": q["client_id"], "redirect_uri": redirect_uri,
                            "challenge": q["code_challenge"], "method": q["code_challenge_method"],
                            "scope": q.get("scope", ""), "patient": launch["patient"],
                            "appContext": launch["appContext"], "at": time.time()}
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

    def _client_of(self, form: dict[str, str]) -> str | None:
        assertion = form.get("client_assertion")
        if assertion is None:
            cid = form.get("client_id")
            return cid if cid in self.clients and not self.clients[cid].get("jwks") else None
        import jwt

        try:
            header = jwt.get_unverified_header(assertion)
            cid = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            jwks = self.clients[cid]["jwks"]
            key = next(k for k in jwks["keys"] if k["kid"] == header.get("kid"))
            claims = jwt.decode(assertion, jwt.PyJWK(key).key, algorithms=[header["alg"]],
                                audience=self.base + "/auth/token")
        except Exception:  # noqa: BLE001 - any broken assertion is an unauthenticated client
            return None
        return cid if claims.get("sub") == cid else None

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append(form)
        code = form.get("code", "")
        grant = self.codes.pop(code, None)
        if code in self.used_codes or grant is None:
            self.used_codes.add(code)
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        self.used_codes.add(code)
        client = self._client_of(form)
        if client is None or client != grant["client_id"]:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
        access = secrets.token_urlsafe(32)
        self.tokens[access] = {"patient": grant["patient"], "scope": grant["scope"]}
        body = {"access_token": access, "token_type": "Bearer", "expires_in": 300, "scope": grant["scope"],
                "patient": grant["patient"], "need_patient_banner": True}
        if grant["appContext"] is not None:
            body["appContext"] = grant["appContext"]
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ------------------------------------------------------------------------------------------ FHIR
    def _token(self, request: Request, patient: str | None = None) -> dict[str, Any] | None:
        auth = request.headers.get("authorization", "")
        token = self.tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if token is None and self.open_fhir and not auth:
            return {"patient": patient, "scope": "patient/*.rs", "open": True}
        return token

    async def metadata(self, request: Request) -> Response:
        return JSONResponse({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                             "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server"}]})

    async def read(self, request: Request) -> Response:
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        self.fhir_requests.append(f"{rtype}/{rid}")
        token = self._token(request, rid if rtype == "Patient" else None)
        if token is None:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        if rtype in self.refuse_types:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=403)
        if token.get("open"):
            for res in (r for p in self.patients.values() for r in p.get(rtype, [])):
                if res.get("id") == rid:
                    return JSONResponse(res, media_type="application/fhir+json")
        for res in self.patients.get(token["patient"], {}).get(rtype, []):
            if res.get("id") == rid:
                return JSONResponse(res, media_type="application/fhir+json")
        # another patient's resource exists but is not this token's: refused, as an EHR does
        if any(r.get("id") == rid for p in self.patients.values() for r in p.get(rtype, [])):
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=403)
        return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)

    async def search(self, request: Request) -> Response:
        rtype = request.path_params["rtype"]
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode()))
        self.fhir_requests.append(f"{rtype}?{urlencode(params)}")
        if rtype in self.slow_types:
            import asyncio

            await asyncio.sleep(self.slow_types[rtype])
        patient = (params.get("patient") or params.get("subject") or "").rsplit("/", 1)[-1]
        token = self._token(request, patient)
        if token is None:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        if rtype in self.refuse_types:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "forbidden"}]}, status_code=403)
        every = token.get("open") and rtype == "Patient" and not patient  # the sandbox's patient list
        if patient != token["patient"] and not every:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=403)
        pool = self.patients.values() if self.broad_search or every else [self.patients.get(patient, {})]
        found = [r for p in pool for r in p.get(rtype, [])]
        codes = {c.split("|")[-1] for c in params.get("code", "").split(",") if c}
        if codes:
            found = [r for r in found
                     if {c.get("code") for c in (r.get("code") or {}).get("coding", [])} & codes]
        offset = int(params.get("_offset", "0"))
        page = found[offset:offset + self.page_size]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                                  "entry": [{"resource": r, "search": {"mode": "match"}} for r in page]}
        if offset + self.page_size < len(found):
            nxt = {k: v for k, v in params.items() if k != "_offset"} | {"_offset": str(offset + self.page_size)}
            bundle["link"] = [{"relation": "next", "url": f"{self.fhir}/{rtype}?{urlencode(nxt)}"}]
        return JSONResponse(bundle, media_type="application/fhir+json")

    # ------------------------------------------------------------------------------------------ EHR page
    async def ehr_page(self, request: Request) -> Response:
        from cds_service.evaluate import build_request
        from cds_service.preview.fixtures import expectation_for

        patient = request.query_params.get("patient", "")
        framed = request.query_params.get("frame") == "1"
        bundle = self.bundles.get(patient)
        if bundle is None or not self.cds_base:
            return HTMLResponse("<p>unknown patient</p>", status_code=404)
        path = next((p for d in FIXTURE_DIRS for p in d.glob("*.json")
                     if json.loads(p.read_text())["entry"][0]["resource"]["id"] == patient), None)
        meta = expectation_for(path) if path else {}
        call = build_request(bundle, meta.get("hook", "order-select"), meta.get("order"))
        call["fhirServer"] = self.fhir
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            resp = await http.post(f"{self.cds_base}/cds-services/{SERVICE}", json=call)
        cards = resp.json().get("cards", [])
        items = []
        for c in cards:
            links = []
            for link in c.get("links") or []:
                if link.get("type") != "smart":
                    continue
                query = urlencode({"app": link["url"], "patient": patient, "appContext": link.get("appContext", "")})
                target = ' target="app"' if framed else ""
                links.append(f'<a class="smart" href="/ehr/launch?{escape(query)}"{target}>{escape(link["label"])}</a>')
            items.append(f'<li class="card {escape(c["indicator"])}"><p>{escape(c["summary"])}</p>'
                         f'{"".join(links)}</li>')
        frame = '<iframe name="app" title="SMART app" width="1100" height="1400"></iframe>' if framed else ""
        html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test EHR</title></head>'
                f'<body><main><h1>Test EHR: orders</h1><ul>{"".join(items)}</ul>{frame}</main></body></html>')
        return HTMLResponse(html)

    def app(self) -> Starlette:
        routes = [
            Route("/fhir/.well-known/smart-configuration", self.smart_configuration),
            Route("/fhir/metadata", self.metadata),
            Route("/fhir/_services/smart/Launch", self.sandbox_launch, methods=["POST"]),
            Route("/fhir/{rtype}/_search", self.search, methods=["POST"]),
            Route("/fhir/{rtype}/{rid}", self.read),
            Route("/fhir/{rtype}", self.search),
            Route("/auth/authorize", self.authorize),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/ehr/launch", self.launcher),
            Route("/ehr", self.ehr_page),
        ]
        # The public CDS Hooks sandbox calls the FHIR server from the browser: CORS, private network included.
        cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"],
                          allow_private_network=True)
        return Starlette(routes=routes, middleware=[cors])


def main() -> None:  # pragma: no cover - a developer's tool
    import uvicorn

    parser = argparse.ArgumentParser(description="Run the test EHR (SMART launch, FHIR over the fixture patients).")
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--cds", default="http://127.0.0.1:8000", help="base URL of the CDS service")
    parser.add_argument("--client-id", default=CLIENT_ID)
    args = parser.parse_args()
    base = f"http://{args.host}:{args.port}"
    ehr = SmartEHR(base, clients={args.client_id: {"redirect_uris": [f"{args.cds}/smart/callback"]}},
                   cds_base=args.cds)
    ehr.open_fhir = True  # the public CDS Hooks sandbox reads open FHIR servers only (fixture data, no PHI)
    print(f"test EHR: FHIR base {ehr.fhir} (the iss), launcher {base}/ehr/launch, EHR page {base}/ehr?patient=pt-101")
    print(f"service settings: CDS_SMART_CLIENTS='{{\"{ehr.fhir}\": {{\"client_id\": \"{args.client_id}\", "
          f"\"frame_ancestors\": [\"{base}\"]}}}}' CDS_SMART_LINKS_UNAUTHENTICATED=true "
          f"CDS_SMART_PREVIEW_LAUNCHER={base}/ehr/launch")
    uvicorn.run(ehr.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
