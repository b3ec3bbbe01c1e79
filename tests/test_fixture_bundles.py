"""Static checks of the fixture bundles (fixtures/fhir) and their expectations (fixtures/expected).

These run without the service: every bundle is a valid FHIR R4 (R4B models) collection Bundle with one
Patient, resolvable references and the draft order its expectation names; every expectation uses only
known rule ids and is internally consistent with the product decisions (docs/clinical/decisions.md; e.g. S0
patients expect no ladder card).
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhir.resources.R4B.bundle import Bundle

from cds_service.clinical.rules import RULES
from cds_service.clinical.stages import STAGE_RULES
from cds_service.clinical.stages import STAGES as LADDER_STAGES

ROOT = Path(__file__).resolve().parents[1] / "fixtures"
FHIR_DIR = ROOT / "fhir"
EXPECTED_DIR = ROOT / "expected"
TODAY = date(2026, 11, 25)
TIMESTAMP_PREFIX = "2026-11-25"

STAGES = set(LADDER_STAGES)
LADDER_RULES = {r.id for r in RULES if r.group == "ladder"}
INDICATION_RULES = {r.id for r in RULES if r.group == "ivig-indication"}
SAFETY_RULES = {r.id for r in RULES if r.group == "ivig-safety"}
KNOWN_RULES = LADDER_RULES | INDICATION_RULES | SAFETY_RULES
INDICATORS = {"info", "warning", "critical"}
CARD_KEYS = {"rule", "indicator", "summary_contains", "text_contains", "facts_cite", "suggestion_codes", "dose_grams"}
TOP_KEYS = {"title", "description", "hook", "order", "stage", "cards", "absent_rules", "notes"}
UCUM = "http://unitsofmeasure.org"
IVIG_ATC = "J06BA02"

BUNDLE_FILES = sorted(FHIR_DIR.glob("*.json"))
EXPECTED_FILES = sorted(EXPECTED_DIR.glob("*.yaml"))
STEMS = [p.stem for p in BUNDLE_FILES]


def load_bundle(stem: str) -> dict[str, Any]:
    return json.loads((FHIR_DIR / f"{stem}.json").read_text())


def load_expected(stem: str) -> dict[str, Any]:
    return yaml.safe_load((EXPECTED_DIR / f"{stem}.yaml").read_text())


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def by_ref(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources(bundle)}


def walk_references(node: Any):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from walk_references(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_references(v)


def is_ivig(res: dict[str, Any]) -> bool:
    concept = res.get("medicationCodeableConcept") or {}
    return any(c.get("code") == IVIG_ATC for c in concept.get("coding") or [])


# --------------------------------------------------------------------------- inventory
def test_enough_fixtures():
    assert len(BUNDLE_FILES) >= 24


def test_every_bundle_has_an_expectation_and_vice_versa():
    assert {p.stem for p in BUNDLE_FILES} == {p.stem for p in EXPECTED_FILES}


def test_file_names_are_numbered():
    for p in BUNDLE_FILES:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+", p.stem), p.name
    numbers = [p.stem[:2] for p in BUNDLE_FILES]
    assert len(numbers) == len(set(numbers)), "duplicate fixture numbers"


# --------------------------------------------------------------------------- bundles
@pytest.mark.parametrize("stem", STEMS)
def test_bundle_validates_as_r4_collection(stem):
    raw = load_bundle(stem)
    Bundle.model_validate(raw)
    assert raw["type"] == "collection"
    assert raw.get("timestamp", "").startswith(TIMESTAMP_PREFIX)


@pytest.mark.parametrize("stem", STEMS)
def test_bundle_patient_ids_and_references(stem):
    raw = load_bundle(stem)
    res = resources(raw)
    patients = [r for r in res if r["resourceType"] == "Patient"]
    assert len(patients) == 1, "exactly one Patient"
    patient = patients[0]
    assert patient.get("birthDate") and patient.get("gender")
    keys = [(r["resourceType"], r.get("id")) for r in res]
    assert all(k[1] for k in keys), "every resource has an id"
    assert len(keys) == len(set(keys)), "resource ids are unique"
    index = by_ref(raw)
    for r in res:
        for ref in walk_references(r):
            assert ref in index, f"{r['resourceType']}/{r['id']} refers to missing {ref}"
        for key in ("subject", "patient"):
            if key in r:
                assert r[key] == {"reference": f"Patient/{patient['id']}"}, f"{r['resourceType']}/{r['id']}"
    for entry in raw["entry"]:
        r = entry["resource"]
        assert entry["fullUrl"].endswith(f"/{r['resourceType']}/{r['id']}")


@pytest.mark.parametrize("stem", STEMS)
def test_bundle_clinical_shape(stem):
    raw = load_bundle(stem)
    for r in resources(raw):
        rtype = r["resourceType"]
        if rtype == "Condition":
            assert r["verificationStatus"]["coding"][0]["system"].endswith("condition-ver-status")
            ver = r["verificationStatus"]["coding"][0]["code"]
            if ver == "entered-in-error":
                assert "clinicalStatus" not in r  # FHIR invariant con-5
            else:
                assert r["clinicalStatus"]["coding"][0]["system"].endswith("condition-clinical")
            if "abatementDateTime" in r:  # con-4
                assert r["clinicalStatus"]["coding"][0]["code"] in ("inactive", "resolved", "remission")
        if rtype == "Observation" and "valueQuantity" in r:
            q = r["valueQuantity"]
            # a UCUM code, or (as many exports send it) only a unit text (decision 32)
            assert (q.get("system") == UCUM and q.get("code")) or q.get("unit"), f"Observation/{r['id']} has no unit"
            assert "effectiveDateTime" in r
        if rtype in ("MedicationStatement", "MedicationRequest", "MedicationAdministration"):
            assert r.get("medicationCodeableConcept", {}).get("coding"), f"{rtype}/{r['id']} is coded"
        for key in ("effectiveDateTime", "onsetDateTime", "recordedDate", "authoredOn", "abatementDateTime"):
            if key in r:
                assert r[key][:10] <= TODAY.isoformat(), f"{rtype}/{r['id']}.{key} is in the future"


@pytest.mark.parametrize("stem", STEMS)
def test_draft_orders(stem):
    raw = load_bundle(stem)
    exp = load_expected(stem)
    index = by_ref(raw)
    order = index.get(exp["order"])
    assert order is not None, f"{exp['order']} not in bundle"
    assert order["resourceType"] == "MedicationRequest" and order["status"] == "draft"
    drafts = [r for r in resources(raw) if r["resourceType"] == "MedicationRequest" and r["status"] == "draft"]
    if exp["hook"] == "order-select":
        assert len(drafts) == 1, "order-select fixtures place exactly one order"
    for d in drafts:
        assert d["intent"] == "order" and d.get("dosageInstruction")
        if is_ivig(d):
            assert d["medicationCodeableConcept"]["text"] == "Immune globulin (human) IV"
            dosage = d["dosageInstruction"][0]
            dq = dosage["doseAndRate"][0]["doseQuantity"]
            assert dq["code"] == "g" and dq["system"] == UCUM
            rep = dosage["timing"]["repeat"]
            assert rep.get("count") or rep.get("boundsDuration"), "IVIG course days"
    # every other MedicationRequest is history, not a draft
    others = [r for r in resources(raw) if r["resourceType"] == "MedicationRequest" and r["status"] != "draft"]
    assert all(r["status"] in ("active", "completed", "stopped", "on-hold") for r in others)


# --------------------------------------------------------------------------- expectations
@pytest.mark.parametrize("stem", STEMS)
def test_expectation_shape(stem):
    exp = load_expected(stem)
    assert set(exp) <= TOP_KEYS, set(exp) - TOP_KEYS
    assert exp["title"] and exp["description"]
    assert exp["hook"] in ("order-select", "order-sign")
    assert re.fullmatch(r"MedicationRequest/[A-Za-z0-9\-.]{1,64}", exp["order"])
    assert exp["stage"] in STAGES
    assert isinstance(exp["cards"], list)
    for c in exp["cards"]:
        assert set(c) <= CARD_KEYS, set(c) - CARD_KEYS
        assert c["rule"] in KNOWN_RULES, c["rule"]
        assert c["indicator"] in INDICATORS
        for key in ("summary_contains", "text_contains", "facts_cite", "suggestion_codes"):
            assert isinstance(c.get(key, []), list)
        if "dose_grams" in c:
            assert c["rule"] == "ivig.dose" and c["dose_grams"] > 0
    for r in exp.get("absent_rules") or []:
        assert r in KNOWN_RULES, r
    assert not {c["rule"] for c in exp["cards"]} & set(exp.get("absent_rules") or [])


@pytest.mark.parametrize("stem", STEMS)
def test_expectation_consistent_with_decisions(stem):
    raw = load_bundle(stem)
    exp = load_expected(stem)
    index = by_ref(raw)
    rules = [c["rule"] for c in exp["cards"]]
    stage_cards = [r for r in rules if r in STAGE_RULES.values()]
    assert len(stage_cards) <= 1
    if stage_cards:
        assert stage_cards[0] == STAGE_RULES[exp["stage"]], "stage card does not match the stage"
    if exp["stage"] == "S0":  # decision 1: out of scope -> no ladder or indication card
        assert not set(rules) & (LADDER_RULES | INDICATION_RULES)
    drafts = [r for r in resources(raw) if r["resourceType"] == "MedicationRequest" and r["status"] == "draft"]
    has_ivig = any(is_ivig(d) for d in drafts)
    patient = next(r for r in resources(raw) if r["resourceType"] == "Patient")
    child = _age(patient["birthDate"]) < 18
    if has_ivig and not child:  # decision 11: a dose card or the weight-missing card, never both
        assert ("ivig.dose" in rules) != ("ivig.dose.weight-missing" in rules)
    elif has_ivig:  # a child: never both (decision 36 withholds the adult dose card)
        assert not {"ivig.dose", "ivig.dose.weight-missing"} <= set(rules)
    else:  # IVIG safety and dose cards need an IVIG order (indication cards may show on ladder orders)
        assert not set(rules) & SAFETY_RULES
    for c in exp["cards"]:
        for ref in c.get("facts_cite") or []:
            assert ref in index, f"{c['rule']} cites {ref}, which is not in the bundle"
    assert len(rules) == len(set(rules)), "one card per rule id"


# --------------------------------------------------------------------------- dose arithmetic
TO_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lbs": 0.45359237}
TO_CM = {"cm": 1.0, "m": 100.0, "[in_i]": 2.54, "inches": 2.54}


def _age(birth: str) -> int:
    b = date.fromisoformat(birth)
    return TODAY.year - b.year - ((TODAY.month, TODAY.day) < (b.month, b.day))


def _in(q: dict[str, Any], table: dict[str, float]) -> float:
    """A Quantity in the table's unit, from its UCUM code or, without one, its unit text (decision 32)."""
    return q["value"] * table[q.get("code") or q["unit"]]


def _latest(raw: dict[str, Any], loinc: str) -> dict[str, Any] | None:
    obs = [
        r
        for r in resources(raw)
        if r["resourceType"] == "Observation" and any(c.get("code") == loinc for c in r["code"]["coding"])
    ]
    return max(obs, key=lambda r: r["effectiveDateTime"], default=None)


@pytest.mark.parametrize("stem", STEMS)
def test_expected_dose_matches_dosing_weight(stem):
    """Recompute decision 11 independently: 2 g/kg of actual weight, or of IBW + 0.4 x (actual - IBW)."""
    raw = load_bundle(stem)
    exp = load_expected(stem)
    dose_cards = [c for c in exp["cards"] if c.get("dose_grams")]
    if not dose_cards:
        return
    w, h, bmi_obs = _latest(raw, "29463-7"), _latest(raw, "8302-2"), _latest(raw, "39156-5")
    assert w and (h or bmi_obs)
    kg = _in(w["valueQuantity"], TO_KG)
    if h:
        cm = _in(h["valueQuantity"], TO_CM)
    else:  # decision 33: the height a recorded BMI and the weight of that visit imply
        cm = 100 * (kg / bmi_obs["valueQuantity"]["value"]) ** 0.5
    patient = next(r for r in resources(raw) if r["resourceType"] == "Patient")
    bmi = kg / (cm / 100) ** 2
    dosing = kg
    if bmi >= 30:
        ibw = (50.0 if patient["gender"] == "male" else 45.5) + 2.3 * (cm / 2.54 - 60)
        dosing = ibw + 0.4 * (kg - ibw) if kg > ibw else kg
    assert abs(dose_cards[0]["dose_grams"] - 2 * dosing) < 1.0, (2 * dosing, dose_cards[0]["dose_grams"])
