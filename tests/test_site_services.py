"""A site adds a hook the way the README says: a services file named by CDS_EXTRA_SERVICES."""

import json

import pytest
from conftest import FIXTURES

from cds_service.config import ConfigurationError, Settings, load_configuration
from cds_service.evaluate import build_request
from cds_service.models import RULE_ID_EXTENSION
from cds_service.services import ServicesError, load_registry

DISCHARGE = """
services:
  - id: neurosarcoidosis-discharge
    hook: encounter-discharge
    context: patient
    rule_groups: [ladder]
    prefetch: [patient, conditions, medicationStatements, medicationRequests, observations]
    title: Neurosarcoidosis treatment stage at discharge
    description: Where the patient stands on the treatment ladder when the encounter ends.
"""
RELAPSE = FIXTURES / "fhir" / "07-s3r-relapse-prednisone-reescalated.json"


@pytest.fixture
def site_file(tmp_path):
    path = tmp_path / "site-services.yaml"
    path.write_text(DISCHARGE, encoding="utf-8")
    return path


@pytest.fixture
def site_client(settings, site_file):
    from fastapi.testclient import TestClient

    from cds_service.app import create_app

    with TestClient(create_app(settings.model_copy(update={"extra_services": site_file}))) as c:
        yield c


def discharge_request() -> dict:
    """What an EHR sends on encounter-discharge: the chart (no draft orders) and the prefetch asked for."""
    request = build_request(json.loads(RELAPSE.read_text()), "patient-view")
    request["hook"] = "encounter-discharge"
    request["context"]["encounterId"] = "enc-1"
    for key in ("allergies", "medicationAdministrations", "devices"):
        request["prefetch"].pop(key)
    return request


def rule_ids(response) -> list[str]:
    return [c["extension"][RULE_ID_EXTENSION] for c in response.json()["cards"]]


def test_a_site_service_is_listed_in_discovery_with_its_prefetch(site_client):
    services = {s["id"]: s for s in site_client.get("/cds-services").json()["services"]}
    assert {"neurosarcoidosis-order-select", "neurosarcoidosis-order-sign", "neurosarcoidosis-patient-view",
            "neurosarcoidosis-discharge"} == set(services)
    discharge = services["neurosarcoidosis-discharge"]
    assert discharge["hook"] == "encounter-discharge"
    assert set(discharge["prefetch"]) == {"patient", "conditions", "medicationStatements", "medicationRequests",
                                          "observations"}
    assert discharge["prefetch"]["observations"] == services["neurosarcoidosis-patient-view"]["prefetch"][
        "observations"]


def test_a_site_service_is_served_with_the_cards_of_its_rule_groups(site_client):
    resp = site_client.post("/cds-services/neurosarcoidosis-discharge", json=discharge_request())
    assert resp.status_code == 200, resp.text
    assert rule_ids(resp) == ["stage.s3r-gc-refractory"]  # the ladder only: no IVIG indication card
    chart = site_client.post("/cds-services/neurosarcoidosis-patient-view",
                             json=dict(discharge_request(), hook="patient-view"))
    assert rule_ids(chart) == ["stage.s3r-gc-refractory", "ivig.indication.steroid-resistant"]  # every group
    # the optional keys it does not ask for are not missed: no note about them on the cards
    assert all("not sent by the EHR" not in (c.get("detail") or "") for c in resp.json()["cards"])


def test_a_site_service_answers_only_its_own_hook(site_client):
    resp = site_client.post("/cds-services/neurosarcoidosis-discharge",
                            json=dict(discharge_request(), hook="patient-view"))
    assert resp.status_code == 400
    assert "answers the 'encounter-discharge' hook" in resp.json()["issue"][0]["diagnostics"]


def test_without_the_setting_the_hook_is_not_served(client):
    assert client.post("/cds-services/neurosarcoidosis-discharge", json=discharge_request()).status_code == 404


@pytest.mark.parametrize("text, says", [
    ("services: [{id: x, hook: encounter-discharge, context: ward, rule_groups: [ladder], title: t, "
     "description: d}]", "services[0].context"),
    ("services: [{id: x, hook: encounter-discharge, context: patient, rule_groups: [dosing], title: t, "
     "description: d}]", "not dosing"),
    ("services: [{id: neurosarcoidosis-order-select, hook: order-select, context: orders, rule_groups: [ladder], "
     "title: t, description: d}]", "already taken"),
    ("services: [{id: x, hook: encounter-discharge, context: patient, rule_groups: [ladder], title: t, "
     "description: d, prefetch: [labs]}]", "not labs"),
    ("services: {", "not valid YAML"),
    ("hooks: []", "a 'services:' list"),
])
def test_a_wrong_site_file_stops_start_up_with_one_line(tmp_path, monkeypatch, text, says):
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ServicesError, match="site.yaml"):
        load_registry(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDS_EXTRA_SERVICES", str(path))
    with pytest.raises(ConfigurationError) as err:
        load_configuration()
    assert len(err.value.lines) == 1
    line = err.value.lines[0]
    assert line.startswith("Configuration error in CDS_EXTRA_SERVICES: expected a YAML file of services")
    assert says in line


def test_a_missing_site_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        Settings(extra_services=tmp_path / "nope.yaml")
