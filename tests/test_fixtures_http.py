"""Every fixture, end to end through the HTTP app: the cards must be exactly the expected ones.

For each ``fixtures/fhir/NN-name.json`` the CDS Hooks request is built with ``request_from_bundle`` (prefetch
filled from the bundle, every draft order in ``draftOrders``, the expectation's ``order`` as the selection)
and posted to ``/cds-services/neurosarcoidosis-<hook>``. Cards are matched on the rule id in
``card.extension[RULE_ID_EXTENSION]``; see ``fixtures/README.md`` for the expectation format.

This module deliberately imports the app without ``importorskip``: if the app or the converter is
missing, the suite must fail loudly.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.models import FACTS_EXTENSION, RULE_ID_EXTENSION
from cds_service.services import registry
from cds_service.sources.bundle import request_from_bundle

ROOT = Path(__file__).resolve().parents[1] / "fixtures"
FHIR_DIR = ROOT / "fhir"
EXPECTED_DIR = ROOT / "expected"
STEMS = [p.stem for p in sorted(FHIR_DIR.glob("*.json"))]
SERVICE_IDS = {"order-select": "neurosarcoidosis-order-select", "order-sign": "neurosarcoidosis-order-sign"}
# The request extension that pins "now" for fixtures (auth off only); Bundle.timestamp is "now".
EVALUATION_TIME_EXTENSION = "org.neurosarcoidosis-cds.evaluation-time"  # the wire name, spelled out on purpose


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cds-data")
    settings = Settings(_env_file=None, data_dir=data_dir, trusted_issuers={}, database_url=None, log_json=False)
    with TestClient(create_app(settings)) as c:
        yield c


def load(stem: str) -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = json.loads((FHIR_DIR / f"{stem}.json").read_text())
    expected = yaml.safe_load((EXPECTED_DIR / f"{stem}.yaml").read_text())
    return bundle, expected


def build_request(bundle: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    body = request_from_bundle(bundle, registry().for_hook(expected["hook"]), expected["order"])
    assert body["hook"] == expected["hook"]
    ext = body.setdefault("extension", {})
    ext.setdefault(EVALUATION_TIME_EXTENSION, bundle["timestamp"])
    return body


def call(client: TestClient, stem: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    bundle, expected = load(stem)
    body = build_request(bundle, expected)
    resp = client.post(f"/cds-services/{SERVICE_IDS[expected['hook']]}", json=body)
    assert resp.status_code == 200, resp.text
    cards = resp.json()["cards"]
    return cards, expected


# --------------------------------------------------------------------------- matching helpers
def rule_of(card: dict[str, Any]) -> str | None:
    return (card.get("extension") or {}).get(RULE_ID_EXTENSION)


def fragment_found(fragment: str, text: str) -> bool:
    """``a|b`` means either alternative; case-insensitive substring match."""
    low = text.lower()
    return any(alt.strip().lower() in low for alt in str(fragment).split("|"))


def cited_references(card: dict[str, Any]) -> set[str]:
    facts = (card.get("extension") or {}).get(FACTS_EXTENSION) or []
    refs = {f.get("reference") for f in facts if isinstance(f, dict) and f.get("reference")}
    # A fact may name a bare reference or a list of them.
    for f in facts:
        if isinstance(f, dict) and isinstance(f.get("references"), list):
            refs.update(r for r in f["references"] if isinstance(r, str))
    return refs


def suggestion_codes(card: dict[str, Any]) -> set[str]:
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for coding in node.get("coding") or []:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    codes.add(coding["code"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for s in card.get("suggestions") or []:
        for a in s.get("actions") or []:
            walk(a.get("resource"))
    return codes


def grams_shown(grams: float, text: str) -> bool:
    whole = int(round(grams)) if abs(grams - round(grams)) < 1e-9 else None
    if whole is not None:
        pattern = rf"(?<![\d.]){whole}(?:\.\d+)?(?!\d)"
    else:
        pattern = rf"(?<![\d.]){re.escape(f'{grams:g}')}(?!\d)"
    return re.search(pattern, text) is not None


def problems(card: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Why ``card`` does not satisfy ``spec`` (empty list: it does)."""
    out = []
    summary = card.get("summary") or ""
    full = summary + "\n" + (card.get("detail") or "")
    if card.get("indicator") != spec["indicator"]:
        out.append(f"indicator {card.get('indicator')!r} != {spec['indicator']!r}")
    for frag in spec.get("summary_contains") or []:
        if not fragment_found(frag, summary):
            out.append(f"summary lacks {frag!r}: {summary!r}")
    for frag in spec.get("text_contains") or []:
        if not fragment_found(frag, full):
            out.append(f"summary/detail lack {frag!r}")
    refs = cited_references(card)
    for ref in spec.get("facts_cite") or []:
        if ref not in refs and ref not in full:
            out.append(f"does not cite {ref} (facts: {sorted(refs)})")
    codes = suggestion_codes(card)
    for want in spec.get("suggestion_codes") or []:
        if not set(str(want).split("|")) & codes:
            out.append(f"no suggestion with code {want} (codes: {sorted(codes)})")
    if spec.get("dose_grams") is not None and not grams_shown(float(spec["dose_grams"]), full):
        out.append(f"dose {spec['dose_grams']} g not shown in summary/detail")
    return out


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("stem", STEMS)
def test_fixture_cards(client, stem):
    cards, expected = call(client, stem)
    actual_rules = [rule_of(c) for c in cards]
    assert None not in actual_rules, f"a card has no rule id: {[c.get('summary') for c in cards]}"

    expected_rules = Counter(spec["rule"] for spec in expected["cards"])
    unexpected = sorted(set(actual_rules) - set(expected_rules))
    missing = sorted(set(expected_rules) - set(actual_rules))
    assert not unexpected and not missing, (
        f"{stem}: unexpected rule ids {unexpected}, missing rule ids {missing}; "
        f"got {[(rule_of(c), c.get('indicator'), c.get('summary')) for c in cards]}"
    )
    assert Counter(actual_rules) == expected_rules, f"{stem}: card count per rule id differs"
    for absent in expected.get("absent_rules") or []:
        assert absent not in actual_rules

    failures = []
    for spec in expected["cards"]:
        candidates = [c for c in cards if rule_of(c) == spec["rule"]]
        reasons = [problems(c, spec) for c in candidates]
        if not any(not r for r in reasons):
            failures.append(f"{spec['rule']}: " + " / ".join("; ".join(r) for r in reasons))
    assert not failures, f"{stem}:\n  " + "\n  ".join(failures)


@pytest.mark.parametrize("stem", STEMS)
def test_fixture_cards_follow_card_rules(client, stem):
    """Decisions 16-17 on every card a fixture produces."""
    cards, _ = call(client, stem)
    for card in cards:
        rule = rule_of(card)
        assert 0 < len(card["summary"]) < 140, rule
        assert card.get("source", {}).get("label"), rule
        if card["indicator"] in ("warning", "critical"):
            assert card.get("overrideReasons"), f"{rule}: warning/critical cards need overrideReasons"
        if card.get("suggestions"):
            assert card.get("selectionBehavior") == "any", rule
            for s in card["suggestions"]:
                assert s.get("uuid"), rule
                assert len(s.get("actions") or []) == 1, f"{rule}: one action per suggestion"
                for a in s["actions"]:
                    if a["type"] == "create":
                        assert a["resource"]["resourceType"] in ("MedicationRequest", "ServiceRequest")
                        assert a["resource"].get("status") == "draft", rule
