"""Immune globulin orders on real charts (issue 14): decisions 34-38, 41 and 42, and one IVIG suggestion.

Each decision has a named test on a fixture shaped like a real export (fixtures 75-89) and, where the logic is
a pure function, unit tests of that function. Cards are read from the CDS Hooks response, as an EHR would.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.clinical import immune_globulin as ig
from cds_service.clinical.reactions import MILD, SEVERE, UNKNOWN, reaction_severity
from cds_service.clinical.thrombosis import (
    anticoagulant_in,
    estrogen_is_local,
    thrombosis_is_active,
    treatment_dose,
)
from cds_service.evaluate import evaluate_bundle
from cds_service.models import RULE_ID_EXTENSION

ROOT = Path(__file__).resolve().parents[1]
FHIR = ROOT / "fixtures" / "fhir"
EXPECTED = ROOT / "fixtures" / "expected"
ALL_FIXTURES = sorted(FHIR.glob("*.json"))


def fixture(num: int) -> Path:
    (path,) = FHIR.glob(f"{num:02d}-*.json")
    return path


def cards_for(num: int, hook: str | None = None) -> dict[str, dict[str, Any]]:
    """The cards of fixture ``num`` by rule id (the hook and order of its expectation unless ``hook``)."""
    path = fixture(num)
    exp = yaml.safe_load((EXPECTED / f"{path.stem}.yaml").read_text())
    bundle = json.loads(path.read_text())
    _, response = evaluate_bundle(bundle, hook or exp["hook"], None if hook else exp["order"])
    out: dict[str, dict[str, Any]] = {}
    for card in response["cards"]:
        out[card["extension"][RULE_ID_EXTENSION]] = card
    return out


def text_of(card: dict[str, Any]) -> str:
    return (card["summary"] + "\n" + (card.get("detail") or "")).lower()


def ivig_suggestions(card: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in card.get("suggestions") or ():
        for a in s.get("actions") or ():
            codes = {c.get("code") for c in a["resource"].get("medicationCodeableConcept", {}).get("coding", ())}
            if "J06BA02" in codes:
                out.append(s)
    return out


# ============================================================================================ decision 34


def test_decision_34_concentration_from_strength_then_name_then_brand_then_default():
    strength = {"ingredient": [{"strength": {"numerator": {"value": 50, "code": "mg"},
                                             "denominator": {"value": 1, "code": "mL"}}}]}
    assert ig.concentration_of(strength, "PRIVIGEN 10%", 10) == ig.Concentration((5.0,), "strength")
    assert ig.concentration_of(None, "OCTAGAM 5 % IV SOLN", 10) == ig.Concentration((5.0,), "name")
    assert ig.concentration_of(None, "100 ML Immunoglobulin G 100 MG/ML Injectable Solution", 10).percents == (10.0,)
    assert ig.concentration_of(None, "Privigen", 10) == ig.Concentration((10.0,), "brand", "privigen")
    assert ig.concentration_of(None, "HIZENTRA subcut", 10).percents == (20.0,)
    assumed = ig.concentration_of(None, "immune globulin (human) IV", 10)
    assert assumed.basis == "assumed" and "assumed" in assumed.sentence()


def test_decision_34_brand_sold_at_two_strengths_takes_the_safe_side_each_way():
    c = ig.concentration_of(None, "Gammaplex IV", 10)
    assert c.ambiguous and c.percents == (5.0, 10.0)
    assert c.volume_ml(100) == 2000  # volume at 5 %: the larger fluid load
    assert c.grams_of_ml(1000) == 100  # grams at 10 %: the larger dose
    assert "check the product" in c.sentence().lower()


def test_decision_34_strength_in_other_units_and_implausible_values():
    assert ig.percent_of_ratio({"numerator": {"value": 10, "code": "g"},
                                "denominator": {"value": 100, "code": "mL"}}) == 10
    assert ig.percent_of_ratio({"numerator": {"value": 0.1, "code": "g"}, "denominator": {"value": 1}}) == 10
    assert ig.percent_of_ratio({"value": 10, "code": "%"}) == 10
    assert ig.percent_of_ratio({"numerator": {"value": 10, "code": "g"},
                                "denominator": {"value": 1, "code": "mL"}}) is None  # 1000 %: a typing error
    assert ig.percent_in_name("IVIG 5% or 10%") is None  # two different strengths named: not read from the name


def test_decision_34_five_percent_product_volume_in_heart_failure():
    cards = cards_for(75)
    hf = text_of(cards["ivig.safety.heart-failure-volume"])
    assert "2,800 ml" in hf and "5%" in hf
    assert "1,400 ml" not in hf


def test_decision_34_ml_order_of_a_five_percent_product_is_a_correct_course():
    cards = cards_for(76)
    dose = cards["ivig.dose"]
    assert dose["indicator"] == "info", dose["summary"]
    assert "160 g" in text_of(dose) and "5%" in text_of(dose)


def test_decision_34_brand_with_two_strengths_shows_the_larger_volume():
    text = text_of(cards_for(77)["ivig.safety.heart-failure-volume"])
    assert "2,800 ml" in text and "gammaplex" in text


# ============================================================================================ decision 35


def _order(ref: str, grams: float, days: float, start: date | None, percent: float = 10.0) -> ig.IgOrder:
    return ig.IgOrder(ref, ref, concentration=ig.Concentration((percent,), "name"),
                      lines=[ig.DoseLine(grams, None, 1.0, days, start)])


def test_decision_35_daily_orders_are_one_course_on_the_calendar():
    orders = [_order(f"MedicationRequest/d{i}", 30, 1, date(2026, 11, 25 + i)) for i in range(5)]
    course = ig.course_of(orders, 75)
    assert (course.total_g, course.days, course.max_daily_g, course.dated) == (150, 5, 30, True)
    assert course.volume_ml == 1500


def test_decision_35_an_order_and_its_replacement_add_up_on_the_same_days():
    a = _order("MedicationRequest/a", 28, 5, date(2026, 11, 25))
    b = ig.IgOrder("MedicationRequest/b", "b", lines=[ig.DoseLine(None, 0.4, 1.0, 5, date(2026, 11, 25))])
    course = ig.course_of([a, b], 70)
    assert course.total_g == pytest.approx(280) and course.days == 5
    assert course.max_daily_g == pytest.approx(56)


def test_decision_35_undated_orders_follow_one_another_and_unread_ones_are_named():
    course = ig.course_of([_order("A", 70, 1, None), _order("B", 70, 1, None)], 70)
    assert (course.total_g, course.days, course.max_daily_g) == (140, 2, 70)
    no_days = ig.IgOrder("C", "C", lines=[ig.DoseLine(30, None, 1.0, None, None)])
    course = ig.course_of([_order("A", 70, 1, None), no_days], 70)
    assert course.total_g is None and course.unread == ["C"] and course.max_daily_g == 70


def test_decision_35_ml_order_volume_is_what_was_ordered():
    conc = ig.Concentration((5.0, 10.0), "brand", "octagam")
    lines, problems = ig.read_ig_order(
        {"dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 500, "code": "mL"}}],
                                "timing": {"repeat": {"count": 2, "frequency": 1, "period": 1, "periodUnit": "d"}}}]},
        conc, lambda d: 1.0)
    assert lines[0].grams == 50 and lines[0].days == 2 and lines[0].ml == 500
    course = ig.course_of([ig.IgOrder("X", "X", concentration=conc, lines=lines)], 70)
    assert course.volume_ml == 1000 and course.total_g == 100
    assert any("mL" in p for p in problems)


def test_decision_35_course_summed_over_daily_orders():
    dose = cards_for(78)["ivig.dose"]
    assert dose["indicator"] == "info", dose["summary"]
    text = text_of(dose)
    assert "150 g" in text and "5 orders" in text
    for i in range(1, 6):
        assert f"medicationrequest/o78-day{i}" in text


def test_decision_35_order_and_replacement_flagged_as_one_course():
    dose = cards_for(79)["ivig.dose"]
    assert dose["indicator"] == "warning"
    text = text_of(dose)
    assert "280 g" in text and "4 g/kg" in text
    assert "medicationrequest/o79-first" in text and "medicationrequest/o79-pharmacy" in text


def test_decision_35_order_select_sums_the_other_drafts_with_the_selected_order():
    """Epic sends earlier unsigned orders in draftOrders on order-select: the course is all of them."""
    path = fixture(79)
    _, response = evaluate_bundle(json.loads(path.read_text()), "order-select", "MedicationRequest/o79-pharmacy")
    dose = next(c for c in response["cards"] if c["extension"][RULE_ID_EXTENSION] == "ivig.dose")
    assert dose["indicator"] == "warning"
    assert "280 g" in text_of(dose) and "medicationrequest/o79-first" in text_of(dose)


# ============================================================================================ decision 36


def test_decision_36_route_of_immune_globulin_products():
    assert ig.administration_kind("HIZENTRA 20%", None) == (ig.SUBCUTANEOUS, False)
    assert ig.administration_kind("GamaSTAN injection", None) == (ig.INTRAMUSCULAR, False)
    assert ig.administration_kind("immune globulin", None, ["J06BA01"]) == (ig.SUBCUTANEOUS, False)
    assert ig.administration_kind("Gamunex-C", "sc") == (ig.SUBCUTANEOUS, False)  # an IV/SC product given SC
    assert ig.administration_kind("Gamunex-C", None) == (ig.INTRAVENOUS, True)
    assert ig.administration_kind("IVIG", None) == (ig.INTRAVENOUS, False)


def test_decision_36_subcutaneous_order_gets_the_thrombosis_card_only():
    assert set(cards_for(80)) == {"ivig.safety.thrombosis"}


def test_decision_36_intramuscular_order_gets_the_thrombosis_card_only():
    assert set(cards_for(81)) == {"ivig.safety.thrombosis"}


def test_decision_36_hyperimmune_globulin_gets_no_card():
    assert cards_for(82) == {}


def test_decision_36_child_gets_safety_cards_but_not_the_adult_dose_card():
    assert set(cards_for(83)) == {"ivig.safety.thrombosis"}
    assert cards_for(38) == {}


# ============================================================================================ decision 37


def test_decision_37_reaction_severity():
    assert reaction_severity(["Anaphylaxis"]) == SEVERE
    assert reaction_severity(["Low blood pressure", "Wheezing"], "moderate") == SEVERE
    assert reaction_severity(["Hypotension"]) == SEVERE
    assert reaction_severity(["Angioedema of lips"]) == SEVERE
    assert reaction_severity(["Headache", "Chills"], "mild", "low") == MILD
    assert reaction_severity(["Fever"], "severe") == SEVERE  # recorded as severe by whoever saw it
    assert reaction_severity([], None, "high") == SEVERE
    assert reaction_severity([], None, "low") == UNKNOWN


def test_decision_37_mild_earlier_reaction_is_listed_on_the_warning_card():
    card = cards_for(84)["ivig.safety.iga"]
    assert card["indicator"] == "warning"
    assert "headache" in text_of(card) and "chills" in text_of(card)


def test_decision_37_fall_in_blood_pressure_makes_the_iga_card_critical():
    card = cards_for(85)["ivig.safety.iga"]
    assert card["indicator"] == "critical"
    assert "blood pressure" in text_of(card)


# ============================================================================================ decision 38


def test_decision_38_thrombosis_state_anticoagulants_and_local_estrogen():
    assert thrombosis_is_active(["I82.412"], ["128053003"], "Acute left femoral DVT", "active")
    assert not thrombosis_is_active(["Z86.718"], [], "DVT 2018", "active")  # a history code
    assert not thrombosis_is_active(["I26.99"], [], "PE", "resolved")
    assert not thrombosis_is_active(["I82.409"], [], "History of DVT", "active")  # history words
    apixaban, enoxaparin, heparin = (anticoagulant_in(t) for t in ("ELIQUIS 5 MG", "Lovenox 40 mg", "Heparin"))
    assert apixaban and treatment_dose(apixaban, 10, "oral") is True
    assert enoxaparin and treatment_dose(enoxaparin, 40, "sc") is False
    assert treatment_dose(enoxaparin, 160, "sc") is True and treatment_dose(enoxaparin, None, "sc") is None
    assert heparin and treatment_dose(heparin, None, "sc") is False and treatment_dose(heparin, None, "iv") is True
    assert anticoagulant_in("aspirin 81 mg") is None
    vaginal = {"coding": [{"system": "http://snomed.info/sct", "code": "16857009"}]}
    assert estrogen_is_local(vaginal, "Estradiol 0.01% cream")
    assert estrogen_is_local(None, "Vagifem 10 mcg")
    assert not estrogen_is_local(vaginal, "Femring 0.05 mg/day")  # a vaginal ring with a systemic dose
    assert not estrogen_is_local(None, "Estradiol 1 mg oral tablet")


def test_decision_38_active_thrombosis_on_anticoagulation_is_said_so_without_prophylaxis_advice():
    card = cards_for(86)["ivig.safety.thrombosis"]
    text = text_of(card)
    assert "active" in card["summary"].lower() and "prior thrombosis" not in text
    assert "anticoagulated" in text and "apixaban" in text
    assert "prophylaxis" not in card["summary"].lower() and "consider prophylaxis" not in text


def test_decision_38_vaginal_estradiol_is_not_a_thrombosis_factor():
    assert "ivig.safety.thrombosis" not in cards_for(87)


def test_decision_38_a_past_thrombosis_is_still_called_prior():
    text = text_of(cards_for(80)["ivig.safety.thrombosis"])
    assert "prior thrombosis" in text and "active thrombosis" not in text


# ============================================================================================ decision 41


def test_decision_41_dose_card_names_aseptic_meningitis_and_the_relapse_mimic_in_meningeal_ns():
    text = text_of(cards_for(88)["ivig.dose"])
    assert "headache" in text and "aseptic meningitis" in text
    assert "mistaken for a relapse" in text


def test_decision_41_no_relapse_mimic_sentence_without_meningeal_involvement():
    text = text_of(cards_for(78)["ivig.dose"])
    assert "aseptic meningitis" in text
    assert "mistaken for a relapse" not in text


# ============================================================================================ decision 42

ERS_DOI = "10.1183/13993003.04079-2020"


def test_decision_42_conduction_block_card_cites_aanem_not_ers():
    card = cards_for(89)["ivig.indication.conduction-block"]
    assert "aanem" in card["source"]["label"].lower()
    assert "10.1002/mus.21433" in card["source"]["url"]


def test_decision_42_ers_is_cited_only_for_the_ladder():
    from cds_service.clinical.cards import card_library

    lib = card_library()
    for rule_id, spec in lib.items():
        if rule_id.startswith("_") or not isinstance(spec, dict) or "evidence" not in spec:
            continue
        if spec["evidence"]["source"] == "ers2021":
            assert rule_id.startswith(("stage.", "ladder.")), f"{rule_id} cites ERS 2021"
    assert lib["stage.s7-refractory-all"]["evidence"]["source"] != "ers2021"  # its figures are Joubert 2017


def _iga_card(*extra: dict[str, Any]) -> Any:
    from cds_service.clinical.engine import evaluate
    from tests.fhir_builders import ATC, cc, ivig_order, obs, patient, record, weight

    rec = record(patient(), weight(70), obs("iga", "2458-8", 0.02, "g/L", days_ago=20), *extra,
                 drafts=[ivig_order()])
    (card,) = [c for c in evaluate(rec, "order-select").cards
               if c.extension[RULE_ID_EXTENSION] == "ivig.safety.iga"]
    return card, cc, ATC


def test_decision_42_iga_card_claims_the_labelled_contraindication_only_with_antibodies_and_a_reaction():
    _, cc, atc = _iga_card()
    anti = {"resourceType": "Observation", "id": "anti", "status": "final", "code": cc(text="Anti-IgA antibody"),
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-01",
            "valueCodeableConcept": cc(text="Positive")}
    reaction = {"resourceType": "AllergyIntolerance", "id": "rx", "patient": {"reference": "Patient/p1"},
                "code": cc(atc, "J06BA02", None, "IVIG"),
                "reaction": [{"manifestation": [cc(text="Bronchospasm")]}]}
    both, _, _ = _iga_card(anti, reaction)
    antibodies, _, _ = _iga_card(anti)
    serious, _, _ = _iga_card(reaction)
    assert {c.indicator for c in (both, antibodies, serious)} == {"critical"}
    assert "labelled contraindication" in both.summary.lower()
    assert "contraindication" not in antibodies.summary.lower()  # the label needs a reaction as well
    assert "with anti-iga" not in serious.summary.lower()  # the severe-reaction contraindication, not the IgA one
    assert "label" in serious.summary.lower()


# ============================================================================================ one IVIG suggestion


def test_two_indication_cards_offer_ivig_on_one_card_only():
    cards = cards_for(89)
    assert set(cards) >= {"ivig.indication.steroid-resistant", "ivig.indication.conduction-block"}
    assert len(ivig_suggestions(cards["ivig.indication.steroid-resistant"])) == 1
    assert ivig_suggestions(cards["ivig.indication.conduction-block"]) == []


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=[p.stem[:2] for p in ALL_FIXTURES])
def test_no_response_carries_two_one_click_ivig_orders(path):
    bundle = json.loads(path.read_text())
    for hook in ("order-select", "order-sign", "patient-view"):
        _, response = evaluate_bundle(bundle, hook)
        offers = [c["extension"][RULE_ID_EXTENSION] for c in response["cards"] if ivig_suggestions(c)]
        assert len(offers) <= 1, f"{hook}: IVIG offered on {offers}"


def test_ivig_offer_owner_follows_the_reviewed_order():
    assert ig.ivig_offer_owner(["ivig.indication.sfn", "ivig.indication.conduction-block"]) == \
        "ivig.indication.conduction-block"
    assert ig.ivig_offer_owner(["stage.s3r-gc-refractory"]) is None


def test_no_one_click_ivig_after_a_serious_reaction_to_immune_globulin():
    """The label contraindicates immune globulin after a serious hypersensitivity reaction: the indication card
    still says IVIG may be considered, but offers no order and says why (no harmful one-click order)."""
    bundle = json.loads(fixture(89).read_text())
    bundle["entry"].append({"fullUrl": "urn:uuid:anaphylaxis", "resource": {
        "resourceType": "AllergyIntolerance", "id": "a89-ivig", "patient": {"reference": "Patient/p89"},
        "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J06BA02"}], "text": "IVIG"},
        "reaction": [{"manifestation": [{"text": "Angioedema and wheeze"}]}]}})
    _, response = evaluate_bundle(bundle, "order-select", "MedicationRequest/o89-mtx")
    cards = {c["extension"][RULE_ID_EXTENSION]: c for c in response["cards"]}
    card = cards["ivig.indication.steroid-resistant"]
    assert "may be considered" in text_of(card) and "no ivig order is proposed" in text_of(card)
    assert not any(ivig_suggestions(c) for c in response["cards"])
