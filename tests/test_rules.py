"""Each rule id fires when it should, stays silent when it should, and shows the numbers it used."""

import pytest

from cds_service import models
from cds_service.clinical.engine import evaluate
from cds_service.clinical.thresholds import Thresholds
from tests.fhir_builders import (
    AMOXICILLIN,
    CYCLOPHOSPHAMIDE,
    INFLIXIMAB,
    IVIG,
    METHOTREXATE,
    METHYLPRED,
    PREDNISONE,
    SCT,
    cc,
    condition,
    creatinine,
    dosage,
    draft,
    egfr,
    height,
    icd,
    ivig_order,
    med_admin,
    med_statement,
    ns_patient,
    obs,
    patient,
    record,
    weight,
)


def run(rec, hook="order-select", **th):
    return evaluate(rec, hook, thresholds=Thresholds(**th) if th else None)


def card(ev, rule_id):
    found = [c for c in ev.cards if c.extension[models.RULE_ID_EXTENSION] == rule_id]
    assert len(found) == 1, f"{rule_id} not fired once: {ev.rule_ids}"
    return found[0]


def cited(c):
    return {f.get("reference") for f in c.extension[models.FACTS_EXTENSION]}


def suggestion_codes(c):
    codes = []
    for s in c.suggestions or []:
        r = s.actions[0].resource
        concept = r.get("medicationCodeableConcept") or r.get("code")
        codes += [cd["code"] for cd in concept["coding"]]
    return codes


def pred(mid="pred", mg=40, start=60, **kw):  # 60 days: a full trial, below dependence (decision 50)
    return med_statement(mid, PREDNISONE, dose=dosage(mg, route="oral"), start_days=start, **kw)


def relapse(days_ago=30):
    return condition("relapse-1", cc(SCT, "192673008", "Sarcoid meningitis"), clinical="recurrence",
                     onset_days=days_ago, recorded_days=days_ago)


def mtx(start=200, **kw):
    return med_statement("mtx", METHOTREXATE, dose=dosage(15, period_unit="wk"), start_days=start, **kw)


GOOD_LABS = (weight(70), height(170), creatinine(0.8), egfr(95))
PRED_ORDER = draft("o-pred", PREDNISONE, dosage(40))
MTX_ORDER = draft("o-mtx", METHOTREXATE, dosage(15, period_unit="wk"))


# ============================================================================ when cards show (decision 6)
def test_unrelated_order_gets_no_card_at_all():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=[draft("amox", AMOXICILLIN, dosage(500, freq=3))]))
    assert ev.stage == "S3R" and ev.cards == []


def test_patient_view_shows_stage_and_indication_cards_without_orders():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS), hook="patient-view")
    assert ev.rule_ids == ["stage.s3r-gc-refractory", "ivig.indication.steroid-resistant"]


def test_escalation_suppressed_when_that_tier_is_ordered():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=[MTX_ORDER]))
    assert "stage.s3r-gc-refractory" not in ev.rule_ids
    assert "ivig.indication.steroid-resistant" in ev.rule_ids
    # a lower tier (prednisone) does not suppress the methotrexate card
    ev2 = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=[PRED_ORDER]))
    assert "stage.s3r-gc-refractory" in ev2.rule_ids


IFX_ORDER = draft("o-ifx", INFLIXIMAB, dosage(350))


def test_an_ordered_drug_that_a_recorded_contraindication_withholds_gets_a_warning():
    s5 = (pred(start=300), mtx(), relapse(10), *GOOD_LABS)
    ev = run(ns_patient(*s5, icd("hf", "I50.22", "Chronic systolic heart failure"), icd("tb", "Z22.7"),
                        drafts=[IFX_ORDER]))
    c = card(ev, "ladder.order-contraindicated")
    assert c.indicator == "warning" and c.summary.startswith("Infliximab ordered despite")
    assert {"Condition/hf", "Condition/tb", "MedicationRequest/o-ifx"} <= cited(c)
    assert "stage.s5-second-line-refractory" not in ev.rule_ids  # decision 6: hidden, this card speaks
    assert "ladder.order-contraindicated" not in run(ns_patient(*s5, drafts=[IFX_ORDER])).rule_ids
    # heart failure withholds anti-TNF agents, not methotrexate (decision 39)
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, icd("hf", "I50.22"), drafts=[MTX_ORDER]))
    assert "ladder.order-contraindicated" not in ev.rule_ids


def test_methotrexate_ordered_during_a_recorded_pregnancy_is_critical():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, icd("preg", "Z33.1", "Pregnant state"), drafts=[MTX_ORDER]))
    c = card(ev, "ladder.order-contraindicated")
    assert c.indicator == "critical" and "pregnancy" in c.summary.lower() and "Condition/preg" in cited(c)


def test_order_select_uses_the_selection_but_all_drafts_count_as_planned():
    drafts = [draft("amox", AMOXICILLIN, dosage(500)), MTX_ORDER]
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=drafts, selections=["MedicationRequest/amox"]))
    assert ev.cards == []  # the selected order is unrelated
    ev2 = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=drafts, selections=["MedicationRequest/o-mtx"]))
    assert "stage.s3r-gc-refractory" not in ev2.rule_ids and ev2.rule_ids  # MTX planned: card suppressed


def test_out_of_scope_patient_gets_no_ladder_card():
    ev = run(record(patient(), icd("lung", "D86.0"), *GOOD_LABS, drafts=[PRED_ORDER]))
    assert ev.stage == "S0" and ev.cards == []


# ============================================================================ stage cards
def test_s1_card_suggests_prednisone_with_dose():
    ev = run(ns_patient(*GOOD_LABS, drafts=[ivig_order()]))  # IVIG is not a ladder tier: no suppression
    c = card(ev, "stage.s1-untreated")
    assert c.indicator == "warning" and "glucocorticoid" in c.summary
    assert suggestion_codes(c) == ["312615"]
    res = c.suggestions[0].actions[0].resource
    assert res["status"] == "draft" and res["subject"] == {"reference": "Patient/p1"}
    assert res["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 40  # decision 26
    assert "Condition/ns-1" in cited(c)


def test_s1_suppressed_when_prednisone_or_a_higher_tier_ordered():
    assert run(ns_patient(*GOOD_LABS, drafts=[PRED_ORDER])).cards == []
    # infliximab for a patient who never had a glucocorticoid: only the skipped-rung note (decision 27)
    ev = run(ns_patient(*GOOD_LABS, drafts=[draft("o", INFLIXIMAB, dosage(350))]))
    assert ev.rule_ids == ["ladder.skipped-rung"]


def test_draft_prednisone_below_threshold_gets_confirm_regimen():
    ev = run(ns_patient(*GOOD_LABS, drafts=[draft("low", PREDNISONE, dosage(10))]))
    c = card(ev, "stage.s2b-gc-subthreshold")
    assert "10 mg" in c.summary and "20 mg" in c.summary and "MedicationRequest/low" in cited(c)


def test_s2_card_shows_max_dose():
    c = card(run(ns_patient(pred(mg=40, start=5), drafts=[PRED_ORDER])), "stage.s2-on-gc")
    assert c.indicator == "info" and "40 mg" in c.summary


def test_s2b_card_low_and_unknown():
    c = card(run(ns_patient(pred(mg=10, start=5), drafts=[PRED_ORDER])), "stage.s2b-gc-subthreshold")
    assert c.indicator == "warning" and "10 mg" in c.summary
    free = med_statement("p", PREDNISONE, dose={"text": "taper as directed"}, start_days=10)
    c2 = card(run(ns_patient(free, drafts=[PRED_ORDER])), "stage.s2b-gc-subthreshold")
    assert "could not be determined" in c2.summary


def test_s3r_card_suggests_weekly_methotrexate():
    c = card(run(ns_patient(pred(), relapse(), drafts=[PRED_ORDER])), "stage.s3r-gc-refractory")
    assert "methotrexate" in c.summary and "Condition/relapse-1" in cited(c)
    res = c.suggestions[0].actions[0].resource
    assert suggestion_codes(c) == ["105585"]
    assert res["dosageInstruction"][0]["timing"]["repeat"]["periodUnit"] == "wk"
    assert res["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 15


def test_a19_pregnancy_withholds_methotrexate_suggestion():
    c = card(run(ns_patient(pred(), relapse(), icd("preg", "Z33.1"), drafts=[PRED_ORDER])),
             "stage.s3r-gc-refractory")
    assert not c.suggestions and "No methotrexate order is proposed" in c.detail
    assert "Condition/preg" in cited(c)


def test_contraindicated_methotrexate_is_not_advised_in_the_summary_either():
    """The summary is all many clinicians read: it must not advise what the detail withholds."""
    c = card(run(ns_patient(pred(), relapse(), icd("preg", "Z33.1"), drafts=[PRED_ORDER])),
             "stage.s3r-gc-refractory")
    assert "contraindicated" in c.summary and "Pregnancy" in c.summary and "suggests adding" not in c.summary
    ev = run(ns_patient(pred(status="stopped", end_days=30, status_reason="steroid psychosis"),
                        icd("ckd5", "N18.5", "Chronic kidney disease, stage 5"), drafts=[PRED_ORDER]))
    c = card(ev, "stage.s3i-gc-intolerant")
    assert c.summary.endswith("not methotrexate (Chronic kidney disease stage 4-5)") and not c.suggestions
    plain = card(run(ns_patient(pred(), relapse(), drafts=[PRED_ORDER])), "stage.s3r-gc-refractory")
    assert "suggests adding methotrexate" in plain.summary and "contraindicated" not in plain.summary


def test_s3i_card():
    ev = run(ns_patient(pred(status="stopped", end_days=30, status_reason="steroid psychosis"), drafts=[PRED_ORDER]))
    c = card(ev, "stage.s3i-gc-intolerant")
    assert suggestion_codes(c) == ["105585"]
    assert "ivig.indication.steroid-resistant" not in ev.rule_ids  # intolerance is not resistance (A2)


def test_s4_card_and_mmf_variant():
    c = card(run(ns_patient(pred(start=56), mtx(start=56), drafts=[MTX_ORDER]), hook="order-sign"),
             "stage.s4-on-second-line")
    assert "methotrexate" in c.summary and "12 weeks" in c.summary
    mmf = med_statement("mmf", cc(None, None, None, "mycophenolate mofetil 1000 mg"), start_days=56)
    c2 = card(run(ns_patient(pred(start=56), mmf, drafts=[PRED_ORDER])), "stage.s4-on-second-line")
    assert "fewer relapses" in c2.summary and "27856779" in c2.source.url


def test_s5_card_infliximab_dose_from_weight():
    ev = run(ns_patient(pred(start=300), mtx(), relapse(10), weight(72), drafts=[PRED_ORDER]))
    c = card(ev, "stage.s5-second-line-refractory")
    assert "infliximab" in c.summary
    assert suggestion_codes(c) == ["310994"]
    dose = c.suggestions[0].actions[0].resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose["value"] == 360 and dose["unit"] == "mg"  # 5 mg/kg x 72 kg


def test_s5_infliximab_withheld_with_latent_tb():
    ev = run(ns_patient(pred(start=300), mtx(), relapse(10), weight(72), icd("tb", "Z22.7"), drafts=[PRED_ORDER]))
    c = card(ev, "stage.s5-second-line-refractory")
    assert not c.suggestions and "Condition/tb" in cited(c)


def test_s6_and_s7_cards():
    ifx = [med_admin(f"ifx-{i}", INFLIXIMAB, days_ago=d, dose_mg=350) for i, d in enumerate((200, 186, 158, 60))]
    recent = [med_admin(f"r-{i}", INFLIXIMAB, days_ago=d, dose_mg=350) for i, d in enumerate((60, 46, 18))]
    c = card(run(ns_patient(pred(start=400), mtx(start=350), *recent, drafts=[PRED_ORDER])), "stage.s6-on-anti-tnf")
    assert "infliximab" in c.summary and c.indicator == "info"
    ev = run(ns_patient(pred(start=400), mtx(start=350), *ifx, relapse(10), drafts=[PRED_ORDER]))
    c7 = card(ev, "stage.s7-refractory-all")
    assert c7.indicator == "warning" and "MDT" in c7.summary


def test_an_order_that_is_not_valid_fhir_is_still_checked_and_the_card_says_so():
    daily = draft("m", METHOTREXATE, dosage(15))
    daily["authoredOn"] = "2026-11-25 09:00"  # not a FHIR dateTime
    ev = run(ns_patient(drafts=[daily]), hook="order-sign")
    c = card(ev, "ladder.mtx-frequency")
    assert c.indicator == "critical" and "MedicationRequest/m" in cited(c)
    assert "MedicationRequest/m: invalid FHIR" in c.detail and "its drug was still checked" in c.detail
    dstu2 = ivig_order()
    dstu2["dosageInstruction"][0]["doseQuantity"] = {"value": 30, "unit": "g"}  # DSTU2's place for the dose
    ev = run(ivig_patient(weight(70), egfr(48), drafts=[dstu2]))
    assert {"ivig.safety.renal", "ivig.dose"} <= set(ev.rule_ids)


def test_an_absurd_number_in_an_order_is_shown_not_a_failure():
    order = ivig_order()
    order["dosageInstruction"][0]["timing"]["repeat"]["period"] = 1e308
    ev = run(ivig_patient(weight(70), egfr(48), drafts=[order]))
    assert "ivig.safety.renal" in ev.rule_ids and "engine.error" not in " ".join(ev.rule_ids)


def test_mtx_frequency_critical_replaces_stage_cards():
    ev = run(ns_patient(drafts=[PRED_ORDER, draft("m", METHOTREXATE, dosage(15))]), hook="order-sign")
    c = card(ev, "ladder.mtx-frequency")
    assert c.indicator == "critical" and "weekly" in c.summary and "MedicationRequest/m" in cited(c)
    assert ev.rule_ids == ["ladder.mtx-frequency"]


def test_possible_ns_gets_conditional_wording():
    rec = record(patient(), condition("s", cc(SCT, "31541009", "Sarcoidosis")), icd("bell", "G51.0", onset_days=None),
                 drafts=[ivig_order()])
    c = card(run(rec), "stage.s1-untreated")
    assert c.summary.startswith("If NS confirmed") and "not confirmed" in c.detail


# ============================================================================ IVIG indications
def test_steroid_resistant_indication_with_dose_suggestion():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, drafts=[PRED_ORDER]))
    c = card(ev, "ivig.indication.steroid-resistant")
    assert c.indicator == "info" and "may be considered" in c.summary
    assert "case report" in c.detail.lower()
    res = c.suggestions[0].actions[0].resource
    assert "J06BA02" in suggestion_codes(c)
    assert res["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 28  # 140 g / 5 days


def _ivig_offer(*extra):
    c = card(run(ns_patient(pred(), relapse(), weight(70), height(170), creatinine(0.8), *extra,
                            drafts=[PRED_ORDER])), "ivig.indication.steroid-resistant")
    return c, [s.actions[0].resource for s in c.suggestions or []]


def test_no_one_click_ivig_with_severe_kidney_impairment_or_an_active_thrombosis():
    pe = icd("pe", "I26.99", "Acute pulmonary embolism", onset_days=10)
    for extra, cited_ref in (((egfr(20),), "Observation/egfr-1"),
                             ((egfr(95), icd("dial", "Z99.2")), "Condition/dial"),
                             ((egfr(95), pe), "Condition/pe")):
        c, offered = _ivig_offer(*extra)
        assert offered == [], cited_ref
        assert "No IVIG order is proposed: severe kidney impairment or an active thrombosis" in c.detail
        assert cited_ref in cited(c)


def test_heart_failure_keeps_the_ivig_offer_and_names_the_volume():
    c, offered = _ivig_offer(egfr(95), icd("hf", "I50.22", "Chronic systolic heart failure"))
    assert offered and "Heart failure is recorded" in c.detail and "Condition/hf" in cited(c)
    plain, offered = _ivig_offer(egfr(95))
    assert offered and "Heart failure" not in plain.detail


def test_no_indication_card_when_already_on_ivig():
    ev = run(ns_patient(pred(), relapse(), *GOOD_LABS, med_admin("iv", IVIG, days_ago=20), drafts=[PRED_ORDER]))
    assert not [r for r in ev.rule_ids if r.startswith("ivig.indication")]


def test_decompensated_bridge_before_cyclophosphamide():
    rec = ns_patient(pred(start=60), med_admin("pulse", METHYLPRED, days_ago=5, dose_mg=1000), *GOOD_LABS,
                     drafts=[ivig_order(), draft("cyc", CYCLOPHOSPHAMIDE, dosage(1000, route="iv"))],
                     selections=["MedicationRequest/ivig-1"])
    ev = run(rec)
    c = card(ev, "ivig.indication.decompensated")
    assert "MedicationRequest/cyc" in cited(c) and "MedicationAdministration/pulse" in cited(c)
    assert not c.suggestions  # IVIG is already being ordered


def test_sfn_and_conduction_block_indications():
    sfn = condition("sfn", cc(SCT, "709489006", "Small fiber neuropathy"))
    ev = run(record(patient(), icd("s", "D86.9"), sfn, *GOOD_LABS, drafts=[ivig_order()]))
    c = card(ev, "ivig.indication.sfn")
    assert "no ERS recommendation" in c.summary and "Condition/sfn" in cited(c)
    assert not [r for r in ev.rule_ids if r.startswith("stage.")]  # SFN alone: no ladder
    cb = icd("mmn", "G61.82", "Multifocal motor neuropathy")
    c2 = card(run(ns_patient(cb, *GOOD_LABS, drafts=[ivig_order()])), "ivig.indication.conduction-block")
    assert "Condition/mmn" in cited(c2)


def test_immunosuppression_contraindicated_indication_lists_contraindications():
    # S5: the next step is anti-TNF, which latent TB rules out entirely (decision 39)
    ev = run(ns_patient(pred(mg=40, start=300), mtx(start=200), relapse(10), icd("tb", "Z22.7"),
                        icd("liver", "K74.60"), *GOOD_LABS, drafts=[ivig_order()]))
    c = card(ev, "ivig.indication.immunosuppression-contraindicated")
    assert {"Condition/tb", "Condition/liver"} <= cited(c)
    assert "Tuberculosis" in c.summary and "Liver" in c.summary


def test_immunosuppression_contraindicated_only_when_the_next_step_is_ruled_out():
    # S2 has no next standard step; in S3R latent TB and liver disease leave azathioprine and mycophenolate
    s2 = run(ns_patient(pred(mg=40, start=5), icd("tb", "Z22.7"), icd("liver", "K74.60"), *GOOD_LABS,
                        drafts=[ivig_order()]))
    s3r = run(ns_patient(pred(mg=40, start=60), relapse(10), icd("tb", "Z22.7"), icd("liver", "K74.60"),
                         *GOOD_LABS, drafts=[ivig_order()]))
    assert s3r.stage == "S3R"
    for ev in (s2, s3r):
        assert "ivig.indication.immunosuppression-contraindicated" not in ev.rule_ids


# ============================================================================ IVIG safety
def ivig_patient(*resources, age=50, sex="female", drafts=None, **kw):
    return record(patient(age, sex), *resources, drafts=drafts or [ivig_order()], **kw)


def test_renal_warning_critical_and_silence():
    c = card(run(ivig_patient(weight(70), egfr(48))), "ivig.safety.renal")
    assert c.indicator == "warning" and "eGFR 48" in c.summary and "Observation/egfr-1" in cited(c)
    c2 = card(run(ivig_patient(weight(70), egfr(25))), "ivig.safety.renal")
    assert c2.indicator == "critical"
    c3 = card(run(ivig_patient(weight(70), egfr(70), icd("dial", "Z99.2"))), "ivig.safety.renal")
    assert c3.indicator == "critical" and "Condition/dial" in cited(c3)
    assert "ivig.safety.renal" not in run(ivig_patient(weight(70), egfr(95))).rule_ids


def test_renal_aki_critical():
    ev = run(ivig_patient(weight(70), creatinine(0.7, 4, "c0"), creatinine(1.2, 0.5, "c1")))
    c = card(ev, "ivig.safety.renal")
    assert c.indicator == "critical" and "Observation/c1" in cited(c)


def test_renal_baseline_missing_with_lab_suggestions():
    ev = run(ivig_patient(weight(70), creatinine(0.8, days_ago=240)))
    c = card(ev, "ivig.safety.renal-baseline-missing")
    assert c.indicator == "warning" and "30 days" in c.summary
    assert sorted(suggestion_codes(c)) == ["2160-0", "3094-0"]
    assert all(s.actions[0].resource["resourceType"] == "ServiceRequest" for s in c.suggestions)
    assert "ivig.safety.renal-baseline-missing" not in run(ivig_patient(weight(70), creatinine(0.8))).rule_ids


def test_renal_unknown_unit_is_said_on_the_card():
    c = card(run(ivig_patient(weight(70), creatinine(0.8, unit="mg/mL"))), "ivig.safety.renal-baseline-missing")
    assert "mg/mL" in c.detail


def test_thrombosis_warning_lists_each_factor_and_high_risk():
    ev = run(ivig_patient(weight(70), egfr(90), icd("htn", "I10", "Essential hypertension"),
                          med_statement("e2", cc(None, None, None, "estradiol 1 mg oral tablet"))))
    c = card(ev, "ivig.safety.thrombosis")
    assert "2 factor" in c.summary and {"Condition/htn", "MedicationStatement/e2"} <= cited(c)
    assert "HIGH" not in c.summary
    c2 = card(run(ivig_patient(weight(70), egfr(90), icd("pe", "Z86.711"))), "ivig.safety.thrombosis")
    assert "HIGH" in c2.summary and "Condition/pe" in cited(c2)
    assert "ivig.safety.thrombosis" not in run(ivig_patient(weight(70), egfr(90))).rule_ids


def test_thrombosis_summary_names_obesity_once_with_the_bmi_but_cites_both_sources():
    for text in ("Obesity, class 3", "Obesity class 3 (BMI 40)"):  # the second as fixture 28's EHR words it
        ev = run(ivig_patient(weight(110), height(165), egfr(90),
                              condition("obesity-1", cc(SCT, "414916001", text))))
        c = card(ev, "ivig.safety.thrombosis")
        assert c.summary.lower().count("obes") == 1 and "BMI 40.4" in c.summary, c.summary
        assert {"Condition/obesity-1", "Observation/weight-1"} <= cited(c)


def test_hyperviscosity():
    ev = run(ivig_patient(weight(70), egfr(90), icd("mgus", "D47.2"), obs("mspike", "33358-3", 1.4, "g/dL")))
    c = card(ev, "ivig.safety.hyperviscosity")
    assert "viscosity" in c.summary and {"Condition/mgus", "Observation/mspike"} <= cited(c)


def test_iga_warning_and_critical():
    c = card(run(ivig_patient(weight(70), egfr(90), obs("iga", "2458-8", 3, "mg/dL", days_ago=100))),
             "ivig.safety.iga")
    assert c.indicator == "warning" and "Observation/iga" in cited(c)
    anti = {"resourceType": "Observation", "id": "anti", "status": "final", "code": {"text": "Anti-IgA antibody"},
            "valueString": "positive", "effectiveDateTime": "2026-01-01"}
    c2 = card(run(ivig_patient(weight(70), egfr(90), icd("igad", "D80.2"), anti)), "ivig.safety.iga")
    assert c2.indicator == "critical" and "Observation/anti" in cited(c2)


def test_prior_severe_reaction_without_iga_deficiency():
    allergy = {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": "Patient/p1"},
               "code": {"text": "Privigen"}, "criticality": "high"}
    c = card(run(ivig_patient(weight(70), egfr(90), allergy)), "ivig.safety.prior-reaction")
    assert c.indicator == "critical" and "AllergyIntolerance/al" in cited(c)


def test_heart_failure_volume_from_order():
    ev = run(ivig_patient(weight(70), egfr(90), icd("hf", "I50.22"), drafts=[ivig_order(g_per_day=28, days=5)]))
    c = card(ev, "ivig.safety.heart-failure-volume")
    assert "140 g" in c.summary and "1,400 mL" in c.summary and "280 mL/day" in c.summary


def test_heart_failure_volume_of_an_order_written_in_millilitres_is_that_volume():
    octagam = cc(None, None, None, "Octagam (immune globulin) IV")
    order = draft("ivig-ml", octagam, dosage(500, "mL", count=4, route="iv"))
    ev = run(ivig_patient(weight(70), egfr(90), icd("hf", "I50.22"), drafts=[order]))
    c = card(ev, "ivig.safety.heart-failure-volume")
    assert "2,000 mL of IVIG ordered" in c.summary and "500 mL/day" in c.summary
    assert "% is" not in c.summary  # no grams-at-a-concentration sentence for a volume the order states


def test_dose_worked_example_woman_bmi_40():
    ev = run(ivig_patient(weight(110), height(165), egfr(90), drafts=[ivig_order(g_per_day=110, days=2)]))
    c = card(ev, "ivig.dose")
    assert c.indicator == "warning"
    assert "2.82 g/kg > 2.2" in c.summary  # 220 g over adjusted 78.1 kg
    assert "156 g" in c.detail and "220 g" in c.detail and "78.1 kg" in c.detail and "110 kg" in c.detail
    assert "Observation/weight-1" in cited(c)


def test_dose_worked_example_man_actual_weight_no_warning():
    ev = run(ivig_patient(weight(68), height(170), egfr(90), sex="male", drafts=[ivig_order(g_per_day=27.2, days=5)]))
    c = card(ev, "ivig.dose")
    assert c.indicator == "info" and "136 g" in c.summary and "actual" in c.summary


def test_dose_single_day_and_daily_limit():
    ev = run(ivig_patient(weight(80), height(180), egfr(90), drafts=[ivig_order(g_per_day=160, days=1)]))
    c = card(ev, "ivig.dose")
    assert c.indicator == "warning" and "daily 2 g/kg > 1" in c.summary and "1 day(s) < 2" in c.summary


def test_dose_in_g_per_kg():
    ev = run(ivig_patient(weight(80), height(180), egfr(90), drafts=[ivig_order(g_per_day=0.4, days=5,
                                                                                unit="g/kg")]))
    c = card(ev, "ivig.dose")
    assert c.indicator == "info" and "160 g" in c.detail


def test_weight_missing_no_dose_numbers():
    ev = run(ivig_patient(egfr(90), weight(70, days_ago=90)))
    c = card(ev, "ivig.dose.weight-missing")
    assert c.indicator == "warning" and "ivig.dose" not in ev.rule_ids


def test_scig_counts_for_safety_but_not_for_intravenous_content():
    # decision 36: the thrombosis warning is on every label; the renal wording, the volume and the dose are IV
    scig = draft("sc", cc(None, None, None, "Hizentra 10 g"), dosage(10, "g", period_unit="wk", route="sc"))
    ev = run(ivig_patient(weight(70), egfr(48), age=70, drafts=[scig]))
    assert "ivig.safety.thrombosis" in ev.rule_ids
    assert not {"ivig.safety.renal", "ivig.dose", "ivig.safety.heart-failure-volume"} & set(ev.rule_ids)


def test_safety_cards_can_be_restricted_to_sarcoidosis():
    rec = ivig_patient(weight(70), egfr(48))
    assert "ivig.safety.renal" in run(rec).rule_ids
    assert run(rec, ivig_safety_sarcoidosis_only=True).cards == []


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_safety_cards_for_non_sarcoid_ivig_on_both_hooks(hook):
    ev = run(ivig_patient(weight(70), egfr(48), age=70), hook=hook)
    assert {"ivig.safety.renal", "ivig.safety.thrombosis", "ivig.dose"} <= set(ev.rule_ids)
    assert ev.stage == "S0"
