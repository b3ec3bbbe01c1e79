"""docker-compose.yml, the Dockerfile and the fixture loader (collection -> transaction Bundles).

No container engine runs in CI here: the compose file is checked structurally always, and with
``docker compose config`` when the compose CLI is available.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from conftest import CLIENT_EXAMPLES, FIXTURES, REPO, load_json

from cds_service.config import Settings

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
FIXTURE_FILES = sorted((FIXTURES / "fhir").glob("*.json"))


def _loader():
    spec = importlib.util.spec_from_file_location("load_fixtures", REPO / "scripts" / "load_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loader = _loader()


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


# --------------------------------------------------------------------------- compose file
def test_compose_has_service_postgres_redis_hapi_and_a_fixture_loader(compose):
    services = compose["services"]
    assert {"cds", "postgres", "redis", "hapi", "fixtures"} <= set(services)
    hapi_build = (REPO / services["hapi"]["build"] / "Dockerfile").read_text()
    assert re.search(r"^FROM hapiproject/hapi:v[0-9.]+$", hapi_build, re.M)  # a pinned release, never "latest"
    assert services["cds"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["cds"]["depends_on"]["redis"]["condition"] == "service_healthy"
    loader_cmd = " ".join(services["fixtures"]["command"])
    assert "load_fixtures.py" in loader_cmd and "http://hapi:8080/fhir" in loader_cmd and "--wait" in loader_cmd


def test_service_environment_points_at_the_compose_databases(compose):
    env = compose["services"]["cds"]["environment"]
    settings = Settings(_env_file=None, database_url=env["CDS_DATABASE_URL"])
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://") and "@postgres:5432/" in env["CDS_DATABASE_URL"]
    assert env["CDS_REDIS_URL"].startswith("redis://redis:")
    assert env["CDS_PATIENT_KEY_SECRET"]  # shared by all workers/instances
    assert env["PROMETHEUS_MULTIPROC_DIR"]
    cmd = compose["services"]["cds"]["command"]
    assert "--workers" in cmd


def test_published_ports_are_loopback_only(compose):
    """The demo runs without authentication: nothing may be reachable from other machines."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_dockerfile_runs_unprivileged_and_ships_the_loader():
    text = DOCKERFILE.read_text()
    assert "\nUSER cds" in text
    assert "COPY scripts" in text and "COPY fixtures" in text
    assert "CDS_DATA_DIR=/data" in text and "HEALTHCHECK" in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin here")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- collection -> transaction
@pytest.mark.skipif(not FIXTURE_FILES, reason="no fixtures in fixtures/fhir yet")
@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_every_fixture_becomes_a_transaction_of_puts(path):
    bundle = load_json(path)
    tx = loader.to_transaction(bundle)
    assert tx["type"] == "transaction" and len(tx["entry"]) == len(bundle["entry"])
    for src, entry in zip(bundle["entry"], tx["entry"], strict=True):
        res = src["resource"]
        assert entry["resource"] == res
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
        assert "search" not in entry
    assert loader.to_transaction(bundle) == tx  # deterministic: loading twice is a no-op for the server


def test_entries_without_id_are_posted_under_their_urn():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1b0c", "resource": {"resourceType": "Patient"}},
        {"resource": {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1b0c"}}},
        {"fullUrl": "urn:uuid:2c", "resource": {"resourceType": "Condition", "id": "c1"}},
        {"fullUrl": "http://old/Condition/c2", "resource": {"resourceType": "Condition", "id": "c2"},
         "search": {"mode": "match"}},
    ]}
    e = loader.to_transaction(bundle)["entry"]
    assert e[0]["fullUrl"] == "urn:uuid:1b0c" and e[0]["request"] == {"method": "POST", "url": "Patient"}
    assert e[1]["fullUrl"].startswith("urn:uuid:") and e[1]["request"]["method"] == "POST"
    assert e[2]["fullUrl"] == "urn:uuid:2c" and e[2]["request"] == {"method": "PUT", "url": "Condition/c1"}
    assert "fullUrl" not in e[3] and "search" not in e[3]


def test_transaction_bundles_pass_through_and_garbage_is_refused():
    tx = load_json(CLIENT_EXAMPLES / "fhir-fixture-transaction-bundle.json")
    assert loader.to_transaction(tx) == tx
    for bad in ({"resourceType": "Patient"}, {"resourceType": "Bundle", "type": "collection", "entry": []},
                {"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}):
        with pytest.raises(ValueError):
            loader.to_transaction(bad)


class _FakeFhir(BaseHTTPRequestHandler):
    received: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        self._answer(200, {"resourceType": "CapabilityStatement"})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, self.headers["Content-Type"], body))
        if any(e["resource"].get("id", "").endswith("-reject-me") for e in body["entry"]):
            self._answer(400, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "bad id"}]})
        else:
            self._answer(200, {"resourceType": "Bundle", "type": "transaction-response"})

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_loader_posts_transactions_and_reports_failures(tmp_path, capsys):
    good = {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}
    bad = {"resourceType": "Bundle", "type": "collection",
           "entry": [{"resource": {"resourceType": "Patient", "id": "reject-me"}}]}
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(bad))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeFhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/fhir"
    try:
        _FakeFhir.received.clear()
        assert loader.main(["--server", base, "--wait", "5", str(tmp_path)]) == 1
    finally:
        server.shutdown()
    assert [(p, ct) for p, ct, _ in _FakeFhir.received] == [("/fhir", "application/fhir+json")] * 2
    assert _FakeFhir.received[0][2]["type"] == "transaction"
    out = capsys.readouterr()
    assert "ok   a.json" in out.out and "FAIL b.json: HTTP 400: bad id" in out.err


@pytest.mark.skipif(not FIXTURE_FILES, reason="no fixtures in fixtures/fhir yet")
def test_request_for_a_fixture_makes_the_service_read_the_fhir_server():
    request = loader.hook_request(FIXTURE_FILES[0], "http://hapi:8080/fhir")
    assert "prefetch" not in request and request["fhirServer"] == "http://hapi:8080/fhir"
    assert request["hook"] in ("order-select", "order-sign") and request["context"]["patientId"]


# --------------------------------------------------------------------------- every patient intact after loading
def _patient_of(bundle: dict) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


@pytest.mark.skipif(not FIXTURE_FILES, reason="no fixtures in fixtures/fhir yet")
def test_fixture_ids_collide_so_loading_must_make_them_unique():
    """Why the loader rewrites ids: the same Condition id is in many fixtures."""
    seen: dict[str, int] = {}
    for path in FIXTURE_FILES:
        for entry in load_json(path)["entry"]:
            key = f"{entry['resource']['resourceType']}/{entry['resource'].get('id')}"
            seen[key] = seen.get(key, 0) + 1
    assert max(seen.values()) > 1


@pytest.mark.skipif(not FIXTURE_FILES, reason="no fixtures in fixtures/fhir yet")
def test_loading_every_fixture_keeps_every_patients_data_intact(capsys):
    from fhir_double import FhirServerDouble

    with FhirServerDouble() as fhir:
        assert loader.main(["--server", fhir.base, "--wait", "5", *map(str, FIXTURE_FILES)]) == 0
        total = sum(len(load_json(p)["entry"]) for p in FIXTURE_FILES)
        assert fhir.puts == total and len(fhir.resources) == total  # nothing overwritten
        for path in FIXTURE_FILES:
            bundle = load_json(path)
            prefix = loader.fixture_prefix(path)
            patient = _patient_of(bundle)
            loaded_id = f"{prefix}-{patient['id']}"
            # read the patient back, and everything that refers to them
            status, body = fhir.get(f"/fhir/Patient/{loaded_id}")
            assert status == 200 and {**body, "id": patient["id"]} == patient, path.name
            stored = fhir.of_patient(loaded_id)
            # a Medication names no patient: it is read back by its id below
            about_patient = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Medication"]
            assert len(stored) == len(about_patient), path.name  # all of this fixture, nothing of another
            for entry in bundle["entry"]:
                original = entry["resource"]
                key = (original["resourceType"], f"{prefix}-{original['id']}")
                copy = stored[key] if key in stored else fhir.resources[key]
                back = json.loads(json.dumps(copy).replace(f"/{prefix}-", "/").replace(f'"{prefix}-', '"'))
                assert back == original, (path.name, original["resourceType"], original["id"])
    assert f"{len(FIXTURE_FILES)}/{len(FIXTURE_FILES)} fixtures loaded" in capsys.readouterr().out


@pytest.mark.skipif(not FIXTURE_FILES, reason="no fixtures in fixtures/fhir yet")
def test_every_fixture_gives_its_cards_when_the_service_reads_the_loaded_server(tmp_path):
    """End to end: all fixtures loaded together, then each fixture's hook request (as --request prints it:
    loaded ids, no prefetch) makes the service read the FHIR server and answer the fixture's expected cards."""
    from fastapi.testclient import TestClient
    from fhir_double import FhirServerDouble

    from cds_service.app import create_app
    from cds_service.preview.fixtures import expected, expected_cards

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", trusted_issuers={}, redis_url=None,
                        database_url=None, fhir_deadline_seconds=10)
    with FhirServerDouble() as fhir, TestClient(create_app(settings)) as client:
        assert loader.main(["--server", fhir.base, *map(str, FIXTURE_FILES)]) == 0
        for path in FIXTURE_FILES:
            request = loader.hook_request(path, fhir.base)
            assert "prefetch" not in request
            resp = client.post(f"/cds-services/neurosarcoidosis-{request['hook']}", json=request)
            assert resp.status_code == 200, (path.name, resp.text)
            shown = sorted((c["extension"]["org.neurosarcoidosis-cds.rule-id"], c["indicator"])
                           for c in resp.json()["cards"])
            want = sorted((c["rule_id"], c["indicator"]) for c in expected_cards(expected(path.stem)))
            assert shown == want, path.name


def test_hapi_has_a_health_check_it_can_run_and_keeps_its_data_on_a_volume(compose):
    services, volumes = compose["services"], compose["volumes"]
    hapi = services["hapi"]
    test = hapi["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "http://127.0.0.1:8080/fhir/metadata"
    # the probe's binary is put into the image by its own build (the upstream image has no HTTP client)
    dockerfile = (REPO / hapi["build"] / "Dockerfile").read_text()
    assert "FROM hapiproject/hapi:v" in dockerfile and f"COPY --from=busybox /bin/busybox {test[1]}" in dockerfile
    assert hapi["healthcheck"]["start_period"]  # HAPI takes a minute or two to start
    # its database is a PostgreSQL whose files are on a named volume
    url = hapi["environment"]["spring.datasource.url"]
    db_service = url.split("//", 1)[1].split(":", 1)[0]
    db_volume = services[db_service]["volumes"][0].split(":", 1)[0]
    assert db_volume in volumes and services[db_service]["healthcheck"]
    assert hapi["depends_on"][db_service]["condition"] == "service_healthy"
    # fixtures are loaded only once HAPI is healthy
    assert services["fixtures"]["depends_on"]["hapi"]["condition"] == "service_healthy"
