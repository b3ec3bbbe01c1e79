"""/metrics (Prometheus text format, no auth), what it counts, the request log line, and multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from store_support import stub_engine
from test_app import SELECT, hook_request

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.metrics import endpoint_of, get_metrics

FHIR = "https://fhir.example.org/r4"


@pytest.fixture
def client(tmp_path, monkeypatch):
    stub_engine(monkeypatch)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url=None, log_json=True)
    with TestClient(create_app(settings)) as c:
        yield c


def sample(client, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_endpoint_speaks_prometheus_text_without_auth(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    for name in ("cds_hook_duration_seconds", "cds_http_responses_total", "cds_audit_queue_depth"):
        assert f"# TYPE {name}" in resp.text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_hook_latency_and_cards_by_rule_and_indicator(client):
    count = 'cds_hook_duration_seconds_count{hook="order-select"}'
    rule_a = 'cds_cards_total{indicator="warning",rule="test.rule-a"}'
    before, cards_before = sample(client, count), sample(client, rule_a)
    assert client.post(SELECT, json=hook_request()).status_code == 200
    assert sample(client, count) == before + 1
    assert sample(client, rule_a) == cards_before + 1
    assert sample(client, 'cds_http_responses_total{endpoint="service",status="200"}') >= 1


@pytest.mark.parametrize("path, body, endpoint, status", [
    (SELECT, {"hook": "order-select"}, "service", "400"),
    ("/cds-services/unknown-service", hook_request(), "service", "404"),
    (SELECT + "/feedback", {"feedback": []}, "feedback", "400"),
    ("/cds-services/a/b/c", {}, "other", "404"),
])
def test_refusals_are_counted_by_status(client, path, body, endpoint, status):
    series = f'cds_http_responses_total{{endpoint="{endpoint}",status="{status}"}}'
    before = sample(client, series)
    assert client.post(path, json=body).status_code == int(status)
    assert sample(client, series) == before + 1


def test_fhir_fetch_latency_and_failures_are_measured_even_when_the_call_fails(client):
    body = hook_request(fhirServer=FHIR)
    body.pop("prefetch")
    requests_before = sample(client, "cds_fhir_requests_total")
    failures_before = sample(client, "cds_fhir_fetch_failures_total")
    fetches_before = sample(client, "cds_fhir_fetch_duration_seconds_count")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(500))
        resp = client.post(SELECT, json=body)
    assert resp.status_code == 412
    assert sample(client, "cds_fhir_fetch_failures_total") == failures_before + 1
    assert sample(client, "cds_fhir_requests_total") > requests_before
    assert sample(client, "cds_fhir_fetch_duration_seconds_count") == fetches_before + 1
    assert sample(client, 'cds_http_responses_total{endpoint="service",status="412"}') >= 1


def test_auth_failures_by_reason(client):
    series = 'cds_auth_failures_total{reason="expired"}'
    before = sample(client, series)
    client.app.state.metrics.auth_failed("expired")
    assert sample(client, series) == before + 1


def test_label_values_are_bounded():
    assert endpoint_of("/cds-services") == "discovery"
    assert endpoint_of("/cds-services/x") == "service"
    assert endpoint_of("/cds-services/x/feedback") == "feedback"
    assert endpoint_of("/cds-services/../../etc/passwd") == "other"
    assert endpoint_of("/smart/launch") == "smart_launch" and endpoint_of("/smart/callback") == "smart_callback"
    assert endpoint_of("/smart/launch/x") == "other"
    assert endpoint_of("/anything/" + "a" * 500) == "other"
    metrics = get_metrics()
    metrics.auth_failed("r" * 500)
    assert all(len(v) <= 80 for key in metrics._children for v in key[1:])


def test_refused_request_log_has_hook_instance_and_timing_but_no_patient_id_or_token(client, capfd):
    body = hook_request(fhirServer=FHIR, fhirAuthorization={"access_token": "tok-SECRET-123",
                                                            "token_type": "Bearer", "subject": "x"})
    body.pop("prefetch")
    with respx.mock() as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(503))
        assert client.post(SELECT, json=body).status_code == 412
    client.post(SELECT, json=hook_request())
    err = capfd.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    request_line = [e for e in events if e["event"] == "request" and e["status"] == 412][-1]
    assert request_line["hookInstance"] == body["hookInstance"] and request_line["ms"] >= 0
    answered = [e for e in events if e["event"] == "hook_answered"][-1]
    assert answered["hookInstance"] and "ms" in answered
    assert "tok-SECRET-123" not in err
    assert '"p1"' not in err and "Patient/p1" not in err


def test_log_context_does_not_leak_into_the_next_request(client, capfd):
    client.post(SELECT, json=hook_request())
    client.post("/cds-services/nope/feedback", json={"feedback": []})
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    refused = [e for e in events if e["event"] == "request" and e["status"] == 404][-1]
    assert "hookInstance" not in refused


def test_multiprocess_mode_sums_the_workers(tmp_path):
    """Two worker processes count; a third (any worker answering /metrics) reports the sum."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    worker = textwrap.dedent("""
        from cds_service.metrics import get_metrics
        m = get_metrics()
        m.auth_failed("bad-signature")
        m.audit_queue_depth(3)
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", "from cds_service.metrics import exposition; "
                          "print(exposition()[0].decode())"], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert 'cds_auth_failures_total{reason="bad-signature"} 2.0' in out


def test_serve_empties_the_multiprocess_dir(tmp_path, monkeypatch):
    from cds_service.metrics import prepare_multiprocess_dir

    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom))
    prepare_multiprocess_dir()
    assert list(prom.iterdir()) == []
