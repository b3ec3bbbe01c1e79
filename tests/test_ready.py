"""Readiness (GET /ready) checks the audit database; liveness (GET /health) stays cheap."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings


def test_ready_when_the_database_answers(client):
    resp = client.get("/ready")
    assert resp.status_code == 200 and resp.json()["status"] == "ready"


def test_not_ready_but_alive_when_the_database_is_unreachable(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        ready = client.get("/ready")
        assert time.monotonic() - started < 10
        assert ready.status_code == 503 and ready.headers["retry-after"]
        body = ready.json()
        assert body["resourceType"] == "OperationOutcome"
        assert "audit database cannot be reached" in body["issue"][0]["diagnostics"]
        assert "nobody" not in ready.text  # no credentials in the answer
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics").text
        assert 'cds_http_responses_total{endpoint="ready",status="503"}' in metrics


def test_ready_recovers_without_a_restart(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None, database_url=None)
    with TestClient(create_app(settings)) as client:
        store = client.app.state.audit.store
        real_ping = store.ping

        async def down():
            from cds_service.store import StoreError

            raise StoreError("the database cannot be reached (OperationalError: disk I/O error)")

        monkeypatch.setattr(store, "ping", down)
        assert client.get("/ready").status_code == 503
        monkeypatch.setattr(store, "ping", real_ping)
        assert client.get("/ready").status_code == 200


def test_not_ready_with_authentication_on_while_the_replay_cache_is_unreachable(tmp_path):
    from tests.conftest import free_port

    issuers = {"https://ehr.example": {"jwks_url": "https://ehr.example/jwks", "fhir_servers": []}}
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(data_dir=tmp_path / "data", trusted_issuers=issuers, redis_url=closed, database_url=None)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert "replay cache cannot be reached" in ready.json()["issue"][0]["diagnostics"]
    memory = Settings(data_dir=tmp_path / "data2", trusted_issuers=issuers, redis_url=None, database_url=None)
    with TestClient(create_app(memory)) as client:
        assert client.get("/ready").status_code == 200
