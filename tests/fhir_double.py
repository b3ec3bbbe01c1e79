"""A small FHIR R4 server double for tests: transactions in, reads and patient searches out.

It is strict where the real one (HAPI) is strict and the loader could go wrong: ``PUT Type/id`` replaces
whatever was stored under that id (so colliding ids lose data, as they would on HAPI), searches match a
patient by the exact reference ``Patient/<id>``, and unknown ids are 404. It answers the searches the
service's prefetch templates make: ``Type?patient=<id>`` with an optional ``code=system|code,...``
(``_sort`` and ``_count`` are accepted; everything matching is returned on one page).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FHIR_JSON = "application/fhir+json"
PATIENT_REFS = ("subject", "patient")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the service fetches its prefetch keys in parallel


class FhirServerDouble:
    def __init__(self) -> None:
        self.resources: dict[tuple[str, str], dict] = {}
        self.puts = 0
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                status, body = double.get(self.path)
                self._answer(status, body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = double.transaction(body)
                self._answer(status, answer)

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", FHIR_JSON)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}/fhir"

    def __enter__(self) -> FhirServerDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ writes
    def transaction(self, bundle: dict) -> tuple[int, dict]:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            return 400, _outcome("only transaction or batch Bundles are accepted at the base URL")
        assigned: dict[str, str] = {}
        entries = bundle.get("entry") or []
        for entry in entries:  # ids for POSTed entries first, so references to their urn resolve
            method, url = entry["request"]["method"], entry["request"]["url"]
            if method == "POST":
                assigned[entry["fullUrl"]] = f"{url}/{uuid.uuid4()}"
        text = json.dumps(entries)
        for urn, ref in assigned.items():
            text = text.replace(json.dumps(urn), json.dumps(ref))
        with self._lock:
            for original, entry in zip(entries, json.loads(text), strict=True):
                res = entry["resource"]
                method, url = entry["request"]["method"], entry["request"]["url"]
                if method == "PUT":
                    rtype, _, rid = url.partition("/")
                    if res.get("resourceType") != rtype or res.get("id") != rid:
                        return 400, _outcome(f"{url}: the resource's type and id must match the URL")
                    self.puts += 1
                else:
                    rtype, rid = assigned[original["fullUrl"]].split("/", 1)
                    res["id"] = rid
                self.resources[(rtype, rid)] = res
        return 200, {"resourceType": "Bundle", "type": "transaction-response",
                     "entry": [{"response": {"status": "200 OK"}} for _ in entries]}

    # ------------------------------------------------------------------ reads and searches
    def get(self, raw_path: str) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        path = parts.path.removeprefix("/fhir").strip("/")
        if path == "metadata":
            return 200, {"resourceType": "CapabilityStatement", "status": "active", "fhirVersion": "4.0.1"}
        if "/" in path:
            rtype, _, rid = path.partition("/")
            found = self.resources.get((rtype, rid))
            return (200, found) if found else (404, _outcome(f"{rtype}/{rid} is not known"))
        params = parse_qs(parts.query)
        patient = (params.get("patient") or params.get("subject") or [""])[0].removeprefix("Patient/")
        codes = {c for value in params.get("code", []) for c in value.split(",") if c}
        matches = [r for (rtype, _), r in sorted(self.resources.items())
                   if rtype == path and self._of_patient(r, patient) and self._has_code(r, codes)]
        return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                     "entry": [{"fullUrl": f"{self.base}/{path}/{r['id']}", "resource": r,
                                "search": {"mode": "match"}} for r in matches]}

    @staticmethod
    def _of_patient(res: dict, patient: str) -> bool:
        if not patient:
            return True
        return any(isinstance(res.get(k), dict) and res[k].get("reference") == f"Patient/{patient}"
                   for k in PATIENT_REFS)

    @staticmethod
    def _has_code(res: dict, codes: set[str]) -> bool:
        if not codes:
            return True
        for coding in (res.get("code") or {}).get("coding") or []:
            if f"{coding.get('system')}|{coding.get('code')}" in codes or coding.get("code") in codes:
                return True
        return False

    def of_patient(self, patient_id: str) -> dict[tuple[str, str], dict]:
        """Everything stored that is the patient or refers to them."""
        return {key: r for key, r in self.resources.items()
                if key == ("Patient", patient_id) or self._of_patient(r, patient_id)}


def _outcome(message: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
                                                           "diagnostics": message}]}
