"""Real records, laboratory and terminology side: decisions 28-33, one named test (or more) per decision.

The end-to-end tests evaluate the hand-written fixtures 60-74 (shaped like Epic and Oracle Health exports)
the way an EHR call delivers them; the small pure helpers behind them are tested directly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical import body_size, kidney, lab_values, units
from cds_service.clinical.kidney import OTHER, RACE_ADJUSTED, RACE_FREE_2021, Result, choose_egfr
from cds_service.clinical.terminology import get_terminology
from cds_service.clinical.text_findings import FROM_TEXT, text_findings
from cds_service.evaluate import evaluate_bundle
from cds_service.models import FACTS_EXTENSION, RULE_ID_EXTENSION

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"


def bundle_of(prefix: str) -> dict[str, Any]:
    path = next(FIXTURES.glob(f"{prefix}-*.json"))
    return json.loads(path.read_text(encoding="utf-8"))


def cards_for(bundle: dict[str, Any], order: str, hook: str = "order-select") -> dict[str, dict[str, Any]]:
    """The response's cards by rule id."""
    _, response = evaluate_bundle(bundle, hook, order)
    return {c["extension"][RULE_ID_EXTENSION]: c for c in response["cards"]}


def fixture_cards(num: int, order: str) -> dict[str, dict[str, Any]]:
    return cards_for(bundle_of(str(num)), order)


def facts_text(card: dict[str, Any]) -> str:
    facts = card.get("extension", {}).get(FACTS_EXTENSION) or []
    return " | ".join(f"{f.get('fact', '')}: {f.get('value', '')} ({f.get('reference', '')})" for f in facts)


def suggested_codes(card: dict[str, Any]) -> set[str]:
    out = set()
    for s in card.get("suggestions") or []:
        for a in s.get("actions") or []:
            res = a.get("resource") or {}
            for cd in (res.get("medicationCodeableConcept") or res.get("code") or {}).get("coding", []):
                out.add(cd.get("code"))
    return out


MTX_CODES = {"6851", "105585", "1441402"}
T = datetime(2026, 11, 23, 7, 40, tzinfo=UTC)


# =============================================================================================== decision 28
def test_decision_28_pregnancy_in_snomed_ct_only_withholds_methotrexate():
    cards = fixture_cards(60, "MedicationRequest/f60-pred-order-1")
    s3r = cards["stage.s3r-gc-refractory"]
    assert not suggested_codes(s3r) & MTX_CODES
    assert "Condition/f60-preg-1" in facts_text(s3r)


def test_decision_28_pregnancy_as_z3a_weeks_of_gestation_withholds_methotrexate():
    cards = fixture_cards(61, "MedicationRequest/f61-pred-order-1")
    assert not suggested_codes(cards["stage.s3r-gc-refractory"]) & MTX_CODES


def test_decision_28_positive_pregnancy_status_withholds_methotrexate():
    cards = fixture_cards(62, "MedicationRequest/f62-pred-order-1")
    s3r = cards["stage.s3r-gc-refractory"]
    assert not suggested_codes(s3r) & MTX_CODES
    assert "Observation/f62-pregstat-1" in facts_text(s3r)


def _hcg(rid: str, when: str, answer: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2106-3",
                                 "display": "Choriogonadotropin (pregnancy test) [Presence] in Urine"}]},
            "subject": {"reference": "Patient/f62-pt"}, "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code,
                                                 "display": answer}], "text": answer}}


def _with_hcg(*tests: dict[str, Any]) -> dict[str, Any]:
    """Fixture 62 with its pregnancy status answer replaced by the given hCG results."""
    b = bundle_of("62")
    b["entry"] = [e for e in b["entry"] if e["resource"]["id"] != "f62-pregstat-1"]
    b["entry"] += [{"resource": t} for t in tests]
    return b


def test_decision_28_positive_hcg_pregnancy_test_withholds_methotrexate():
    cards = cards_for(_with_hcg(_hcg("f62-hcg-1", "2026-11-20T09:00:00Z", "Positive", "10828004")),
                      "MedicationRequest/f62-pred-order-1")
    s3r = cards["stage.s3r-gc-refractory"]
    assert not suggested_codes(s3r) & MTX_CODES
    assert "Observation/f62-hcg-1" in facts_text(s3r) and "positive hCG on 2026-11-20" in facts_text(s3r)


def test_decision_28_a_later_negative_hcg_outweighs_an_earlier_positive():
    cards = cards_for(_with_hcg(_hcg("f62-hcg-1", "2026-10-01T09:00:00Z", "Positive", "10828004"),
                                _hcg("f62-hcg-2", "2026-11-20T09:00:00Z", "Negative", "260385009")),
                      "MedicationRequest/f62-pred-order-1")
    assert suggested_codes(cards["stage.s3r-gc-refractory"]) & MTX_CODES


def test_decision_28_not_pregnant_now_keeps_methotrexate():
    cards = fixture_cards(63, "MedicationRequest/f63-pred-order-1")
    assert suggested_codes(cards["stage.s3r-gc-refractory"]) & MTX_CODES


def test_decision_28_who_icd10_and_snomed_codes_name_the_same_value_sets():
    term = get_terminology()
    who = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Z33"}]}
    assert "pregnancy" in term.match(who).names
    for system, code, value_set in [
        ("http://snomed.info/sct", "77386006", "pregnancy"),
        ("http://snomed.info/sct", "24700007", "contra.demyelinating"),
        ("http://snomed.info/sct", "56717001", "contra.tuberculosis"),
        ("http://snomed.info/sct", "363346000", "contra.malignancy"),
        ("http://snomed.info/sct", "84114007", "contra.heart-failure"),
        ("http://snomed.info/sct", "431857002", "contra.renal"),
    ]:
        assert value_set in term.match({"coding": [{"system": system, "code": code}]}).names, (code, value_set)


# =============================================================================================== decision 29
def test_decision_29_text_only_dvt_and_factor_v_leiden_make_high_risk_labelled_from_text():
    cards = fixture_cards(73, "MedicationRequest/f73-ivig-order-1")
    card = cards["ivig.safety.thrombosis"]
    text = card["summary"] + card["detail"] + facts_text(card)
    assert FROM_TEXT in text
    assert "Condition/f73-dvt-txt" in text and "Condition/f73-fvl-txt" in text
    assert "high risk" in text.lower()


def test_decision_29_denied_or_family_history_text_adds_no_factor():
    cards = fixture_cards(74, "MedicationRequest/f74-ivig-order-1")
    assert "ivig.safety.thrombosis" not in cards


@pytest.mark.parametrize(("text", "found"), [
    ("History of left leg DVT 2019", "thrombosis.history"),
    ("Factor V Leiden mutation heterozygous", "thrombosis.hypercoagulable"),
    ("Pregnant, 14 weeks", "pregnancy"),
    ("CKD stage 4 (nephrocalcinosis)", "renal.ckd-severe"),
    ("HFrEF, EF 30%", "heart-failure"),
])
def test_decision_29_affirmed_text_names_its_value_set(text, found):
    assert found in text_findings(text)


@pytest.mark.parametrize("text", [
    "DVT ruled out by Doppler", "No history of DVT", "Family history of factor V Leiden (mother)",
    "? pregnancy", "Pregnancy test negative", "DVT prophylaxis", "Diabetes insipidus",
    "Idiopathic intracranial hypertension", "not pregnant",
])
def test_decision_29_denied_doubted_or_other_persons_text_names_nothing_relevant(text):
    assert not {"thrombosis.history", "thrombosis.hypercoagulable", "pregnancy", "renal.diabetes",
                "thrombosis.cardiovascular"} & set(text_findings(text))


def test_decision_29_text_never_puts_a_patient_on_the_ladder_but_withholds_an_order():
    """A text-only 'neurosarcoidosis' problem is no diagnosis (no ladder card); a text-only pregnancy still
    withholds the methotrexate one-click order (judgement: when in doubt, a card without a suggestion)."""
    b = bundle_of("60")
    for e in b["entry"]:
        r = e["resource"]
        if r["id"] == "f60-preg-1":
            r["code"] = {"text": "Pregnant, 9 weeks by dates"}
    s3r = cards_for(b, "MedicationRequest/f60-pred-order-1")["stage.s3r-gc-refractory"]
    assert not suggested_codes(s3r) & MTX_CODES
    assert FROM_TEXT in facts_text(s3r)
    text_ns = bundle_of("74")
    for e in text_ns["entry"]:
        if e["resource"]["id"] == "f74-cidp-1":
            e["resource"]["code"] = {"text": "Neurosarcoidosis with cranial neuropathy"}
    cards = cards_for(text_ns, "MedicationRequest/f74-ivig-order-1")
    assert not [r for r in cards if r.startswith(("stage.", "ivig.indication."))]


# =============================================================================================== decision 30
def test_decision_30_creatinine_in_umol_under_14682_9_is_read():
    cards = fixture_cards(64, "MedicationRequest/f64-pred-order-1")
    s3r = cards["stage.s3r-gc-refractory"]
    assert not suggested_codes(s3r) & MTX_CODES
    assert "Observation/f64-cr-si-1" in facts_text(s3r)
    assert "eGFR below 30" in facts_text(s3r)


def test_decision_30_every_serum_creatinine_code_and_the_pregnancy_status_are_prefetched(client):
    services = client.get("/cds-services").json()["services"]
    for service in services:
        if service["hook"] == "patient-view":
            continue
        prefetch = json.dumps(service.get("prefetch") or {})
        for code in ("2160-0", "14682-9", "38483-4", "59826-8", "39156-5", "82810-3", "2106-3", "2118-8"):
            assert code in prefetch, (service["id"], code)


def test_decision_30_race_adjusted_egfr_never_used_in_either_bundle_order():
    b = bundle_of("65")
    for entries in (b["entry"], list(reversed(b["entry"]))):
        renal = cards_for({**b, "entry": entries}, "MedicationRequest/f65-ivig-order-1")["ivig.safety.renal"]
        assert "56" in facts_text(renal)
        assert "Observation/f65-egfr-b" not in facts_text(renal)


def test_decision_30_lowest_of_simultaneous_egfrs():
    b = bundle_of("66")
    for entries in (b["entry"], list(reversed(b["entry"]))):
        renal = cards_for({**b, "entry": entries}, "MedicationRequest/f66-ivig-order-1")["ivig.safety.renal"]
        assert "Observation/f66-egfr-b" in facts_text(renal)


def test_decision_30_bedside_schwartz_under_18_with_a_height():
    renal = fixture_cards(67, "MedicationRequest/f67-ivig-order-1")["ivig.safety.renal"]
    assert "52" in facts_text(renal) and "schwartz" in (facts_text(renal) + renal["detail"]).lower()


def test_decision_30_child_without_a_height_is_told_why_there_is_no_egfr():
    cards = fixture_cards(68, "MedicationRequest/f68-ivig-order-1")
    card = cards["ivig.safety.renal-baseline-missing"]
    assert "height" in (card["detail"] + facts_text(card)).lower()
    assert not card.get("suggestions")


def test_decision_30_ckd_epi_2021_values():
    assert kidney.ckd_epi_2021(190 / 88.4, 68, "female") == pytest.approx(24.5, abs=0.1)
    assert kidney.ckd_epi_2021(1.45, 58, "male") == pytest.approx(55.9, abs=0.1)
    assert kidney.ckd_epi_2021(1.0, 17, "male") is None
    assert kidney.ckd_epi_2021(1.0, 50, "unknown") is None


def test_decision_30_bedside_schwartz_values():
    assert kidney.bedside_schwartz(150, 1.2) == pytest.approx(51.6, abs=0.1)
    assert kidney.bedside_schwartz(0, 1.2) is None


def _egfr(value: float, ref: str, method: str = RACE_FREE_2021, when: datetime = T) -> Result:
    return Result(value, when, ref, method)


def test_decision_30_choice_prefers_race_free_2021_then_computed_then_other():
    creat = [Result(1.45, T, "Observation/cr")]
    both = choose_egfr([_egfr(70, "Observation/2021"), _egfr(50, "Observation/mdrd", OTHER)], creat,
                       age=58, sex="male", height_cm=None)
    assert (both.basis, both.value) == ("reported-2021", 70)
    computed = choose_egfr([_egfr(50, "Observation/mdrd", OTHER)], creat, age=58, sex="male", height_cm=None)
    assert (computed.basis, computed.value, computed.reference) == ("computed-2021", 56, "Observation/cr")
    other = choose_egfr([_egfr(50, "Observation/mdrd", OTHER)], [], age=58, sex="male", height_cm=None)
    assert (other.basis, other.value) == ("reported-other", 50)


def test_decision_30_race_adjusted_refused_and_order_free():
    pair = [_egfr(66, "Observation/b", RACE_ADJUSTED), _egfr(55, "Observation/nb", OTHER)]
    for results in (pair, pair[::-1]):
        c = choose_egfr(results, [], age=58, sex="male", height_cm=None)
        assert (c.value, c.reference, c.refused) == (55, "Observation/nb", ("Observation/b",))
    only = choose_egfr(pair[:1], [], age=58, sex="male", height_cm=None)
    assert only.value is None and "race" in only.explanation


def test_decision_30_lowest_of_one_time_and_newest_draw_wins():
    same = [_egfr(64, "Observation/a"), _egfr(58, "Observation/b")]
    assert choose_egfr(same, [], age=45, sex="female", height_cm=None).value == 58
    assert choose_egfr(same[::-1], [], age=45, sex="female", height_cm=None).value == 58
    older = _egfr(40, "Observation/old", when=datetime(2026, 11, 1, tzinfo=UTC))
    assert choose_egfr([older, *same], [], age=45, sex="female", height_cm=None).value == 58


def test_decision_30_children():
    creat = [Result(1.2, T, "Observation/cr")]
    lab = [_egfr(74, "Observation/adult-eq")]
    with_height = choose_egfr(lab, creat, age=14, sex="male", height_cm=150)
    assert (with_height.basis, with_height.value) == ("schwartz", 52)
    without = choose_egfr(lab, creat, age=12, sex="female", height_cm=None)
    assert without.value is None and "height" in without.explanation


# =============================================================================================== decision 31
def test_decision_31_iga_below_detection_limit_is_deficiency():
    cards = fixture_cards(69, "MedicationRequest/f69-ivig-order-1")
    assert "Observation/f69-iga-1" in facts_text(cards["ivig.safety.iga"])


def _iga_card(value: float, unit: str) -> dict[str, Any]:
    """Fixture 69's IgA card with its IgA result recorded as ``<value unit``."""
    b = bundle_of("69")
    for e in b["entry"]:
        if e["resource"]["id"] == "f69-iga-1":
            e["resource"]["valueQuantity"] = {"value": value, "comparator": "<", "unit": unit,
                                              "system": "http://unitsofmeasure.org", "code": unit}
    return cards_for(b, "MedicationRequest/f69-ivig-order-1")["ivig.safety.iga"]


def test_decision_31_iga_below_0_07_g_per_l_is_below_7_mg_per_dl():
    card = _iga_card(0.07, "g/L")
    assert "Observation/f69-iga-1" in facts_text(card)
    assert "cannot tell" not in (card["detail"] + facts_text(card)).lower()
    assert units.convert_quantity({"value": 0.07, "code": "g/L"}, "iga").value == 7


def test_decision_31_a_bound_that_leaves_the_threshold_open_is_said():
    card = _iga_card(10, "mg/dL")
    assert "cannot tell" in (card["detail"] + facts_text(card)).lower()


def test_decision_31_an_egfr_bound_below_the_warning_but_open_at_the_critical_threshold_says_so():
    from cds_service.clinical.engine import evaluate
    from tests.fhir_builders import egfr, ivig_order, patient, record, weight

    low = egfr(45, oid="egfr-bound")
    low["valueQuantity"]["comparator"] = "<"
    order = ivig_order()
    ev = evaluate(record(patient(50), weight(70), low, drafts=[order], selections=[f"MedicationRequest/{order['id']}"]),
                  "order-select")
    renal = next(c for c, rid in zip(ev.cards, ev.rule_ids, strict=True) if rid == "ivig.safety.renal")
    assert renal.indicator == "warning"
    assert "cannot tell whether below 30" in renal.detail and "<45" in renal.detail


@pytest.mark.parametrize(("value", "comparator", "threshold", "below"), [
    (7, "<", 7, True), (10, "<", 7, None), (6.9, "<=", 7, True), (7, "<=", 7, None),
    (60, ">", 60, False), (20, ">", 60, None), (60, ">=", 60, False), (48, None, 60, True), (61, None, 60, False),
])
def test_decision_31_which_side_of_a_threshold(value, comparator, threshold, below):
    assert lab_values.below(value, comparator, threshold) is below


def test_decision_31_comparator_read_from_the_quantity():
    assert lab_values.comparator_of({"value": 0.07, "comparator": "<"}) == "<"
    assert lab_values.comparator_of({"value": 0.07, "comparator": "ad"}) is None
    assert lab_values.comparator_of({"value": 0.07}) is None


# =============================================================================================== decision 32
def test_decision_32_egfr_and_creatinine_with_text_units_are_read():
    cards = fixture_cards(70, "MedicationRequest/f70-ivig-order-1")
    assert "ivig.safety.renal-baseline-missing" not in cards and "ivig.safety.renal" not in cards


def test_decision_32_weight_in_lbs_as_text_gives_a_dose():
    cards = fixture_cards(71, "MedicationRequest/f71-ivig-order-1")
    assert "ivig.dose" in cards and "160" in cards["ivig.dose"]["summary"] + cards["ivig.dose"]["detail"]


@pytest.mark.parametrize(("text", "kind", "code"), [
    ("mL/min/1.73 m2", "egfr", "mL/min/{1.73_m2}"), ("ml/min/1.73m²", "egfr", "mL/min/{1.73_m2}"),
    ("MG/DL", "creatinine", "mg/dL"), ("micromol/L", "creatinine", "umol/L"), ("μmol/l", "creatinine", "umol/L"),
    ("lbs", "weight", "[lb_av]"), ("Kg", "weight", "kg"), ("kilos", "weight", "kg"), ("inches", "height", "[in_i]"),
    ("g/l", "iga", "g/L"),
])
def test_decision_32_unambiguous_unit_text(text, kind, code):
    known = units._FACTORS[kind][1]
    assert lab_values.unit_code_from_text(text, kind, known) == code


@pytest.mark.parametrize(("text", "kind"), [("units", "creatinine"), ("mg", "weight"), ("", "weight"),
                                            ("mmol/dL", "creatinine"), ("%", "egfr")])
def test_decision_32_anything_else_stays_unknown(text, kind):
    assert lab_values.unit_code_from_text(text, kind, units._FACTORS[kind][1]) is None


# =============================================================================================== decision 33
def test_decision_33_recorded_bmi_gives_obesity_and_the_adjusted_weight():
    cards = fixture_cards(72, "MedicationRequest/f72-ivig-order-1")
    assert "Observation/f72-bmi-1" in facts_text(cards["ivig.safety.thrombosis"])
    dose = cards["ivig.dose"]
    assert "161" in dose["summary"] + dose["detail"] and "adjusted" in dose["detail"].lower()


def test_decision_33_height_from_bmi():
    assert body_size.height_cm_from_bmi(118, 44.1) == pytest.approx(163.6, abs=0.1)
    assert body_size.height_cm_from_bmi(118, 0) is None
    assert body_size.same_measurement(T, T.replace(hour=20)) and not body_size.same_measurement(T, None)


# =============================================================================================== review pack
def test_the_generated_rule_pages_are_current():
    """docs/clinical/rules.md is generated from the registry, card texts, criteria, thresholds and fixtures."""
    from cds_service.clinical import review_pack

    current = review_pack.target().read_text(encoding="utf-8")
    assert current == review_pack.rules_markdown(), (
        "docs/clinical/rules.md is out of date: python -m cds_service.clinical.review_pack > docs/clinical/rules.md")


def test_the_rule_pages_cover_every_rule_and_name_its_fixtures():
    from cds_service.clinical import review_pack
    from cds_service.clinical.rules.registry import RULES

    text = review_pack.rules_markdown()
    for rule in RULES:
        assert f"### `{rule.id}`" in text
    assert "`73-text-only-dvt-and-factor-v-leiden` (warning)" in text
    assert "| `contra.tuberculosis` |" in text
