"""Browsers calling the service: CORS, and the private-network preflight the public CDS Hooks sandbox causes.

A page on a public https origin (https://sandbox.cds-hooks.org) that calls a service on localhost or a
private address makes Chromium-based browsers send a preflight with
``Access-Control-Request-Private-Network: true``; without ``Access-Control-Allow-Private-Network: true`` in
the answer the browser never sends the hook call.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings

SANDBOX = "https://sandbox.cds-hooks.org"
SELECT = "/cds-services/neurosarcoidosis-order-select"


def _client(tmp_path, **settings):
    return TestClient(create_app(Settings(data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                                          database_url=None, **settings)))


def preflight(client, origin=SANDBOX, path=SELECT, private=True):
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
    if private:
        headers["Access-Control-Request-Private-Network"] = "true"
    return client.options(path, headers=headers)


@pytest.mark.parametrize("path", ["/cds-services", SELECT, SELECT + "/feedback"])
def test_private_network_preflight_from_the_public_sandbox_is_allowed(tmp_path, path):
    with _client(tmp_path) as client:
        resp = preflight(client, path=path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-private-network"] == "true"
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()


def test_only_allowed_origins_get_it(tmp_path):
    with _client(tmp_path, cors_origins=[SANDBOX]) as client:
        allowed = preflight(client)
        other = preflight(client, origin="https://evil.example")
        plain = preflight(client, private=False)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == SANDBOX
    assert allowed.headers["access-control-allow-private-network"] == "true"
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert plain.status_code == 200 and "access-control-allow-private-network" not in plain.headers


def test_private_network_access_can_be_turned_off(tmp_path):
    with _client(tmp_path, cors_private_network=False) as client:
        resp = preflight(client)
    assert resp.status_code == 400 and "private-network" in resp.text


def test_the_hook_call_after_the_preflight_carries_cors_headers(tmp_path):
    with _client(tmp_path) as client:
        resp = client.post(SELECT, json={}, headers={"Origin": SANDBOX})
    assert resp.status_code == 400 and resp.headers["access-control-allow-origin"] == "*"
