"""Schemathesis against the app's own OpenAPI document, in-process (ASGI): no 5xx and no hang.

Two variants: authentication off (requests reach parsing, FHIR fallback and the rules) and on (every
request carries a fresh, valid ES384 token for the exact URL called, so the fuzzed bodies get past auth).
Every outbound HTTP request is answered by respx, so fuzzed fhirServer values never reach the network.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import pytest
import respx
import schemathesis
from hypothesis import HealthCheck, settings

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.services import registry
from tests.auth_support import BASE, JWKS_URL, OTHER_JWKS_URL, Keys, trusted

KEYS = Keys()
SERVICE_IDS = sorted(registry().ids())
MAX_SECONDS_PER_CALL = 5.0


def _app(auth: bool):
    s = Settings(data_dir=Path(tempfile.mkdtemp(prefix="cds-fuzz-")), trusted_issuers=trusted() if auth else {},
                 redis_url=None, database_url=None, fhir_deadline_seconds=0.3, log_level="WARNING")
    return create_app(s)


@pytest.fixture(scope="module", autouse=True)
def _no_network():
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=KEYS.jwks()))
        mock.get(OTHER_JWKS_URL).mock(return_value=httpx.Response(200, json=KEYS.jwks()))
        mock.route(host="ehr.example.org").mock(return_value=httpx.Response(200, json={
            "resourceType": "Bundle", "type": "searchset", "entry": []}))
        mock.route().mock(return_value=httpx.Response(404))
        yield


open_schema = schemathesis.openapi.from_asgi("/openapi.json", _app(auth=False))
auth_schema = schemathesis.openapi.from_asgi("/openapi.json", _app(auth=True))
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _real_service(case) -> None:
    """Most cases aim at a real service id, so fuzzed bodies are parsed instead of stopping at a 404."""
    params = case.path_parameters or {}
    if "service_id" in params and sum(map(ord, str(params["service_id"]))) % 4:
        case.path_parameters = {**params, "service_id": SERVICE_IDS[len(str(params["service_id"])) % 2]}


def _check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400 and response.text:
        assert response.json()["resourceType"] == "OperationOutcome"


@open_schema.parametrize()
@FUZZ
def test_fuzz_without_auth_never_5xx(case):
    _real_service(case)
    started = time.perf_counter()
    response = case.call()
    assert time.perf_counter() - started < MAX_SECONDS_PER_CALL
    _check(response)


@auth_schema.parametrize()
@FUZZ
def test_fuzz_with_valid_tokens_never_5xx(case):
    _real_service(case)
    path = case.formatted_path  # what the app sees, so the token's aud names the exact URL called
    token = KEYS.token(aud=f"{BASE}{path}")
    started = time.perf_counter()
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert time.perf_counter() - started < MAX_SECONDS_PER_CALL
    _check(response)
