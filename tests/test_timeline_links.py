"""Cards carry the 'Open treatment timeline' smart link exactly when the calling EHR may launch it: per
trusted issuer with authentication on, by CDS_SMART_LINKS_UNAUTHENTICATED without; the preview page and
``cds-service evaluate`` show it."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import respx
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.evaluate import build_request
from cds_service.models import RULE_ID_EXTENSION
from tests.auth_support import ISS, JWKS_URL, OTHER_JWKS_URL, SELECT_ID, Keys, trusted
from tests.conftest import FIXTURES, load_json

BUNDLE = FIXTURES / "longitudinal" / "fhir" / "102-cranial-neuropathy-ivig-courses-ckd.json"
ORDER = "MedicationRequest/ivig-order-1"
DEV_FHIR = "http://127.0.0.2:9000/fhir"


def _links(cards: list[dict]) -> dict[str, list[dict]]:
    return {c["extension"][RULE_ID_EXTENSION]: [lk for lk in c.get("links") or [] if lk["type"] == "smart"]
            for c in cards}


def _call_with_auth(tmp_path, smart_clients: dict, issuer_extra: dict | None = None) -> list[dict]:
    keys = Keys()
    issuers = trusted(**(issuer_extra or {}))
    settings = Settings(data_dir=tmp_path, trusted_issuers=issuers, redis_url=None, database_url=None,
                        public_base_url="https://cds.example.org", smart_clients=smart_clients)
    body = build_request(load_json(BUNDLE), "order-select", ORDER)
    body.pop("extension", None)
    token = keys.token(aud=f"https://cds.example.org/cds-services/{SELECT_ID}")  # the public base URL is the aud
    with respx.mock(assert_all_called=False) as mock:
        for url in (JWKS_URL, OTHER_JWKS_URL):
            mock.get(url).mock(return_value=httpx.Response(200, json=keys.jwks()))
        with TestClient(create_app(settings)) as c:
            resp = c.post(f"/cds-services/{SELECT_ID}", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["cards"]


def test_cards_for_an_ehr_with_a_smart_client_carry_the_link(tmp_path):
    cards = _call_with_auth(tmp_path, {ISS: {"client_id": "abc"}})
    links = _links(cards)
    assert {"ivig.safety.renal", "ivig.dose", "ivig.indication.steroid-resistant",
            "stage.s5-second-line-refractory"} <= set(links)
    for rule, found in links.items():
        assert found == [{"label": "Open treatment timeline", "url": "https://cds.example.org/smart/launch",
                          "type": "smart", "appContext": rule}], rule


def test_card_links_off_for_that_ehr(tmp_path):
    cards = _call_with_auth(tmp_path, {ISS: {"client_id": "abc", "card_links": False}})
    assert cards and not any(_links(cards).values())


def test_an_ehr_without_a_smart_client_gets_no_link(tmp_path):
    other = "https://other.example.org/fhir"
    issuers = {**trusted(), other: {"jwks_url": "https://other.example.org/jwks"}}
    settings = Settings(data_dir=tmp_path, trusted_issuers=issuers, smart_clients={other: {"client_id": "x"}},
                        redis_url=None, database_url=None)
    from cds_service.smart.links import links_enabled

    assert links_enabled(settings, other) and not links_enabled(settings, ISS) and not links_enabled(settings, None)


def _dev_client(tmp_path, **kw) -> TestClient:
    settings = Settings(data_dir=tmp_path, trusted_issuers={}, redis_url=None, database_url=None,
                        smart_clients={DEV_FHIR: {"client_id": "ns-timeline"}}, **kw)
    return TestClient(create_app(settings))


def test_without_authentication_links_only_when_enabled(tmp_path):
    body = build_request(load_json(BUNDLE), "order-select", ORDER)
    with _dev_client(tmp_path / "off") as c:
        assert not any(_links(c.post(f"/cds-services/{SELECT_ID}", json=body).json()["cards"]).values())
    with _dev_client(tmp_path / "on", smart_links_unauthenticated=True) as c:
        links = _links(c.post(f"/cds-services/{SELECT_ID}", json=body).json()["cards"])
    assert links["ivig.safety.renal"][0]["url"] == "http://testserver/smart/launch"


def test_the_preview_shows_the_link_through_the_launcher(tmp_path):
    launcher = "http://127.0.0.2:9000/ehr/launch"
    with _dev_client(tmp_path, smart_links_unauthenticated=True, smart_preview_launcher=launcher) as c:
        out = c.post("/fixtures/evaluate", params={"hook": "order-select", "order": ORDER},
                     content=BUNDLE.read_bytes(), headers={"Content-Type": "application/json"}).json()
    renal = next(p for p, card in zip(out["preview"]["cards"], out["response"]["cards"], strict=True)
                 if card["extension"][RULE_ID_EXTENSION] == "ivig.safety.renal")
    link = next(lk for lk in renal["links"] if "launcher" in lk["label"])
    parts = urlsplit(link["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == launcher
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q == {"app": "http://testserver/smart/launch", "patient": "pt-102", "appContext": "ivig.safety.renal"}


def test_evaluate_prints_the_link(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cds_service.cli import app as cli_app
    from cds_service.config import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDS_SMART_CLIENTS", json.dumps({DEV_FHIR: {"client_id": "ns-timeline"}}))
    monkeypatch.setenv("CDS_SMART_LINKS_UNAUTHENTICATED", "true")
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["evaluate", str(BUNDLE), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    links = _links(json.loads(result.output)["cards"])
    assert links["ivig.safety.renal"][0]["url"] == "https://cds.example.org/smart/launch"
