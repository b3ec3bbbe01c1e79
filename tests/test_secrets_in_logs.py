"""Secret hygiene: the JWT, fhirAuthorization.access_token and patient ids never reach logs, error bodies or
metrics, whether the call succeeds or fails (bad JWT, FHIR server refusing, malformed requests)."""

from __future__ import annotations

import httpx
import orjson
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from tests.auth_support import BASE, FHIR, JWKS_URL, OTHER_JWKS_URL, SELECT_ID, SELECT_URL, Keys, hook_body, trusted

PATIENT = "pat-Zq81-SECRETID-77"
ACCESS_TOKEN = "at-9f8e7d6c5b4a-SECRET-ACCESS"
FEEDBACK_URL = f"{SELECT_URL}/feedback"


def _fhir(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
        return httpx.Response(401)
    if "/Patient/" in request.url.path:
        return httpx.Response(200, json={"resourceType": "Patient", "id": PATIENT, "gender": "male",
                                         "birthDate": "1961-02-03", "identifier": [{"value": "MRN-SECRET-123"}]})
    if request.url.path.endswith("/Observation"):
        # A FHIR server that refuses one query: the whole call becomes a 412.
        return httpx.Response(403, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "forbidden", "diagnostics": f"no access to {PATIENT}"}]})
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": []})


def test_no_token_access_token_or_patient_id_in_logs_bodies_or_metrics(tmp_path, capfd):
    keys = Keys()
    settings = Settings(data_dir=tmp_path, trusted_issuers=trusted(), redis_url=None, database_url=None,
                        log_level="DEBUG", log_json=True)
    tokens: list[str] = []
    bodies: list[str] = []

    def token(aud: str = SELECT_URL, **kw) -> str:
        t = keys.token(aud=aud, **kw)
        tokens.append(t)
        return t

    def send(client: TestClient, method: str, path: str, tok: str | None, body=None, raw: bytes | None = None):
        headers = {"Content-Type": "application/json"}
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        content = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        resp = client.request(method, path, content=content, headers=headers)
        bodies.append(resp.text)
        return resp

    statuses = []
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        mock.get(OTHER_JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        mock.route(host="ehr.example.org").mock(side_effect=_fhir)
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            svc = f"/cds-services/{SELECT_ID}"
            good = hook_body(PATIENT)
            # Successful call, with a fhirAuthorization that is sent but not needed.
            ok = dict(good, fhirServer=FHIR, fhirAuthorization={"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                                                 "expires_in": 300, "scope": "x", "subject": "c"})
            statuses.append(send(c, "POST", svc, token(), ok).status_code)
            # Replay of the same token.
            statuses.append(send(c, "POST", svc, tokens[-1], ok).status_code)
            # A token whose signature is broken, one for the wrong audience, one expired.
            broken = token()[:-6] + "AAAAAA"
            tokens.append(broken)
            statuses.append(send(c, "POST", svc, broken, ok).status_code)
            statuses.append(send(c, "POST", svc, token(aud=f"{BASE}/cds-services"), ok).status_code)
            statuses.append(send(c, "POST", svc, token(exp=1, iat=0), ok).status_code)
            # A token that is not a JWT at all, carrying the access token as if it were one.
            statuses.append(send(c, "POST", svc, ACCESS_TOKEN, ok).status_code)
            # FHIR fallback where the server refuses one query -> 412.
            fallback = hook_body(PATIENT, prefetch=False, fhir_server=FHIR, access_token=ACCESS_TOKEN)
            statuses.append(send(c, "POST", svc, token(), fallback).status_code)
            # FHIR server that is not on the allow-list -> 412, with the access token in the body.
            foreign = hook_body(PATIENT, prefetch=False, fhir_server="https://elsewhere.example/fhir",
                                access_token=ACCESS_TOKEN)
            statuses.append(send(c, "POST", svc, token(), foreign).status_code)
            # 400s: wrong hook, missing userId, malformed JSON around the patient id, bad selections.
            statuses.append(send(c, "POST", svc, token(), dict(ok, hook="patient-view")).status_code)
            no_user = orjson.loads(orjson.dumps(ok))
            del no_user["context"]["userId"]
            statuses.append(send(c, "POST", svc, token(), no_user).status_code)
            statuses.append(send(c, "POST", svc, token(),
                                 raw=b'{"context":{"patientId":"' + PATIENT.encode() + b'"').status_code)
            bad_sel = orjson.loads(orjson.dumps(ok))
            bad_sel["context"]["selections"] = {"patient": PATIENT}
            statuses.append(send(c, "POST", svc, token(), bad_sel).status_code)
            bad_auth = dict(good, fhirAuthorization={"access_token": ACCESS_TOKEN})  # no fhirServer -> 400
            statuses.append(send(c, "POST", svc, token(), bad_auth).status_code)
            bad_prefetch = orjson.loads(orjson.dumps(good))
            bad_prefetch["prefetch"]["patient"] = f"Patient/{PATIENT}"
            statuses.append(send(c, "POST", svc, token(), bad_prefetch).status_code)
            # Discovery and feedback.
            statuses.append(send(c, "GET", "/cds-services", token(aud=f"{BASE}/cds-services")).status_code)
            feedback = {"feedback": [{"card": "3f1a2b3c-0000-4000-8000-000000000001", "outcome": "overridden",
                                      "outcomeTimestamp": "2026-01-01T00:00:00Z",
                                      "overrideReason": {"reason": {"code": "x", "system": "y"},
                                                         "userComment": "fine"}}]}
            statuses.append(send(c, "POST", f"{svc}/feedback", token(aud=FEEDBACK_URL), feedback).status_code)
            statuses.append(send(c, "POST", f"{svc}/feedback", token(), feedback).status_code)
            metrics = c.get("/metrics")
            metrics_text = metrics.text if metrics.status_code == 200 else ""

    # The scenario really covered successes and each kind of failure.
    assert statuses.count(200) >= 3, statuses
    assert {401, 412, 400} <= set(statuses), statuses
    assert 500 not in statuses, statuses

    logs = capfd.readouterr()
    out = logs.err + logs.out
    assert "hook_answered" in out or "auth_refused" in out  # the logs were captured at all
    secrets = {"patient id": PATIENT, "access token": ACCESS_TOKEN, "MRN": "MRN-SECRET-123"}
    for i, t in enumerate(tokens):
        secrets[f"JWT {i}"] = t
        secrets[f"JWT {i} signature"] = t.rsplit(".", 1)[-1]
    for name, secret in secrets.items():
        assert secret not in out, f"{name} leaked into the logs"
        assert secret not in metrics_text, f"{name} leaked into /metrics"
        for body in bodies:
            assert secret not in body, f"{name} leaked into a response body: {body[:200]}"


@pytest.mark.parametrize("debug", [True, False])
def test_unexpected_errors_log_no_request_data(tmp_path, capfd, monkeypatch, debug):
    """Even the last-resort 500 handler logs only the error type, not the request or its values."""
    import cds_service.app as app_module

    def boom(*args, **kwargs):
        raise RuntimeError(f"boom with {PATIENT} and {ACCESS_TOKEN}")

    monkeypatch.setattr(app_module, "gather", boom)
    settings = Settings(data_dir=tmp_path, trusted_issuers={}, redis_url=None, database_url=None,
                        log_level="DEBUG" if debug else "INFO")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        body = hook_body(PATIENT, fhir_server=FHIR, access_token=ACCESS_TOKEN)
        resp = c.post(f"/cds-services/{SELECT_ID}", json=body)
    assert resp.status_code == 500
    out = capfd.readouterr().err
    assert "RuntimeError" in out
    assert PATIENT not in out and ACCESS_TOKEN not in out and PATIENT not in resp.text


def test_hook_answered_line_is_the_line_the_logger_writes(capsys):
    """The per-call line is built without structlog's processor chain (logs.hot_info); it must stay the
    line the chain writes (same keys in the same order, same bound context, long values cut the same way),
    so a step added to the chain (a cut, a redaction) cannot be skipped on the hot path unnoticed."""
    import structlog

    from cds_service import logs

    logs.configure("INFO", json=True)
    log = logs.get_logger("cds_service.test")
    fields = {"service": "svc", "hook": "order-select", "cards": 3, "ms": 1.25, "note": "x" * 5000}
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(hookInstance="hi-1", request="r-1")
    try:
        capsys.readouterr()
        log.info("hook_answered", **fields)
        logs.hot_info(log, "hook_answered", **dict(fields))
        chain_line, hot_line = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    finally:
        structlog.contextvars.clear_contextvars()
    assert chain_line.pop("timestamp").endswith("Z") and hot_line.pop("timestamp").endswith("Z")
    assert list(hot_line.items()) == list(chain_line.items())
    assert len(hot_line["note"]) < 5000  # cut, as the chain cuts it
