import json
from pathlib import Path

import pytest

from cds_service.clinical.facts import build_facts
from cds_service.clinical.record import PatientRecord
from cds_service.clinical.terminology import GC
from tests.fhir_builders import (
    ATC,
    IVIG,
    METHYLPRED,
    PREDNISONE,
    RXN,
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
    ns,
    obs,
    patient,
    record,
    sct,
    weight,
)

SYNTHEA = Path(__file__).resolve().parent / "data" / "synthea-r4"


def facts_of(*resources, **kw):
    return build_facts(record(*resources, **kw))


# ----------------------------------------------------------------------------- neurosarcoidosis status (B1)
def test_specific_ns_code_is_active():
    f = facts_of(patient(), ns())
    assert f.ns_status == "active"
    assert f.ns_conditions[0].reference == "Condition/ns-1"


def test_sarcoidosis_plus_manifestation_code_is_ns_but_manifestation_alone_is_not():
    f = facts_of(patient(), icd("s", "D86.89"), icd("m", "G53"))
    assert f.ns_status == "active"
    assert facts_of(patient(), icd("m", "G53")).ns_status == "none"


def test_refuted_and_entered_in_error_are_ignored_active_wins():
    assert facts_of(patient(), ns(verification="refuted")).ns_status == "none"
    assert facts_of(patient(), ns(verification="entered-in-error")).ns_status == "none"
    # A15: one refuted and one active record -> active wins
    f = facts_of(patient(), ns("a", verification="refuted"), ns("b"))
    assert f.ns_status == "active" and [c.reference for c in f.ns_conditions] == ["Condition/b"]


def test_provisional_is_suspected_and_resolved_is_history():
    assert facts_of(patient(), ns(verification="provisional")).ns_status == "suspected"
    assert facts_of(patient(), ns(verification=None)).ns_status == "active"  # absent -> confirmed
    f = facts_of(patient(), ns(clinical="remission"))
    assert f.ns_status == "history" and f.ns_in_remission


def test_a16_sarcoidosis_plus_unlinked_facial_palsy_is_possible():
    f = facts_of(patient(), sct("s", "31541009", "Sarcoidosis"), icd("bell", "G51.0", "Bell's palsy", onset_days=None))
    assert f.ns_status == "possible"
    assert f.possible_ns[0].reference == "Condition/bell"


def test_pulmonary_sarcoidosis_only_is_out_of_scope():
    f = facts_of(patient(), icd("lung", "D86.0"))
    assert f.ns_status == "none" and f.has_sarcoidosis


def test_sfn_needs_sarcoidosis_and_evidence():
    sfn = condition("sfn", cc(SCT, "709489006", "Small fiber neuropathy"))
    assert facts_of(patient(), icd("s", "D86.9"), sfn).sfn
    assert not facts_of(patient(), sfn).sfn  # idiopathic SFN: not an indication
    g63_no_evidence = icd("g63", "G63")
    f = facts_of(patient(), icd("s", "D86.89"), g63_no_evidence)
    assert not f.sfn and f.ns_conditions[0].kind == "neuropathy"  # sarcoid neuropathy -> ladder
    g63_biopsy = icd("g63", "G63", note=[{"text": "reduced IENFD on skin biopsy"}])
    assert facts_of(patient(), icd("s", "D86.89"), g63_biopsy).sfn


# ----------------------------------------------------------------------------- drugs (B2, B5)
def test_gc_prednisone_equivalent_and_route():
    f = facts_of(patient(), ns(),
                 med_statement("mp", cc(RXN, "259966", "methylprednisolone 4 MG Oral Tablet"),
                               dose=dosage(16, route="oral")),
                 med_statement("inh", cc(RXN, "1", "budesonide"), dose=dosage(0.4, route="inhaled")),
                 med_statement("pred-inh", PREDNISONE, dose=dosage(20, route="inhaled")))
    gcs = f.of_class(GC)
    assert [e.reference for e in gcs] == ["MedicationStatement/mp"]  # inhaled route excluded (A5)
    assert gcs[0].pred_eq_mg == pytest.approx(20)
    assert gcs[0].current


def test_tablet_count_times_strength():
    f = facts_of(patient(), ns(), med_statement("p", PREDNISONE, dose=dosage(2, "{tbl}")))
    assert f.of_class(GC)[0].pred_eq_mg == 40


def test_iv_pulse_administration():
    f = facts_of(patient(), ns(), med_admin("pulse", METHYLPRED, days_ago=3, dose_mg=1000))
    e = f.of_class(GC)[0]
    assert e.pulse and e.current and e.pred_eq_mg == 1250


def test_medication_reference_resolved_against_medication_resources():
    rec = record(patient(), ns(), {"resourceType": "Medication", "id": "m1", "code": PREDNISONE})
    rec.add({"resourceType": "MedicationStatement", "id": "ms", "status": "active",
             "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/m1"},
             "effectivePeriod": {"start": "2026-10-01"}, "dosage": [dosage(40)]})
    f = build_facts(rec)
    assert f.of_class(GC)[0].pred_eq_mg == 40


def test_stop_reason_classification():
    f = facts_of(patient(), ns(),
                 med_statement("a", PREDNISONE, status="stopped", end_days=10, status_reason="steroid psychosis"),
                 med_statement("b", PREDNISONE, status="stopped", end_days=10, status_reason="no response"),
                 med_statement("c", PREDNISONE, status="stopped", end_days=10, status_reason="patient preference"))
    assert [e.stop_reason for e in f.of_class(GC)] == ["intolerance", "ineffective", "other"]


def test_broken_resource_is_skipped_with_a_note():
    rec = record(patient(), ns(), creatinine(1.0))
    bad = weight(70)
    bad["interpretation"] = "H"  # must be a list of CodeableConcept: invalid FHIR
    rec.add(bad)
    f = build_facts(rec)
    assert f.creatinine is not None and f.creatinine.value == 1.0
    assert f.weight is None
    assert any("Observation/weight-1" in n for n in rec.notes)


def test_lenient_category_object_and_missing_subject():
    c = ns()
    c["category"] = {"coding": [{"code": "problem-list-item"}]}  # object instead of list
    del c["subject"]
    assert facts_of(patient(), c).ns_status == "active"


# ----------------------------------------------------------------------------- body size, labs, units
def test_worked_example_woman_bmi_40():
    f = facts_of(patient(sex="female"), weight(110), height(165))
    assert f.bmi == pytest.approx(40.4, abs=0.05)
    assert f.ibw == pytest.approx(56.9, abs=0.05)
    assert f.adjusted_weight == pytest.approx(78.1, abs=0.05)
    assert f.dosing_weight_basis == "adjusted"
    assert f.weight.reference == "Observation/weight-1"


def test_worked_example_man_normal_bmi():
    f = facts_of(patient(sex="male"), weight(68), height(170))
    assert f.dosing_weight == 68 and f.dosing_weight_basis == "actual" and f.adjusted_weight is None


def test_stale_and_pounds_weight():
    assert facts_of(patient(), weight(70, days_ago=45)).weight is None  # older than 30 days (A17)
    f = facts_of(patient(), obs("w", "29463-7", 176.4, "[lb_av]"))
    assert f.weight.value == pytest.approx(80.0, abs=0.05) and "176.4 [lb_av]" in f.weight.original


def test_creatinine_umol_converted_and_egfr_computed_when_missing():
    f = facts_of(patient(age=60, sex="male"), creatinine(115, unit="umol/L"))
    assert f.creatinine.value == pytest.approx(1.30, abs=0.01)
    assert f.egfr.computed and 55 <= f.egfr.value <= 70  # CKD-EPI 2021 for a 60-year-old man


def test_unknown_unit_reported_and_value_not_used():
    rec = record(patient(), creatinine(1.1, unit="mg/mL"))
    f = build_facts(rec)
    assert f.creatinine is None
    assert f.unit_problems and "mg/mL" in f.unit_problems[0]
    assert any("mg/mL" in n for n in rec.notes)


def test_kdigo_aki_rise():
    f = facts_of(patient(), creatinine(0.7, days_ago=5, oid="c-old"), creatinine(1.2, days_ago=1, oid="c-new"))
    assert any(x.key == "aki" and x.reference == "Observation/c-new" for x in f.renal_critical)
    f2 = facts_of(patient(), creatinine(1.0, days_ago=5, oid="c-old"), creatinine(1.1, days_ago=1, oid="c-new"))
    assert not any(x.key == "aki" for x in f2.renal_critical)


# ----------------------------------------------------------------------------- risk factors
def test_thrombosis_factors_keep_their_references():
    f = facts_of(patient(age=70), icd("pe", "Z86.711"), icd("htn", "I10"),
                 med_statement("e2", cc(RXN, "4083", "Estradiol"), dose=dosage(1, route="oral")))
    keys = {(x.key, x.reference) for x in f.thrombosis_factors}
    assert ("history", "Condition/pe") in keys
    assert ("cardiovascular", "Condition/htn") in keys
    assert ("estrogen", "MedicationStatement/e2") in keys
    assert ("age", "Patient/p1") in keys
    assert f.thrombosis_high_risk


def test_renal_factors_and_critical():
    f = facts_of(patient(age=70), egfr(48), icd("dm", "E11.9"),
                 med_statement("nsaid", cc(RXN, "5640", "Ibuprofen"), dose=dosage(400, route="oral")))
    keys = {x.key for x in f.renal_factors}
    assert {"egfr", "diabetes", "age", "nephrotoxic"} <= keys
    assert not f.renal_critical
    f2 = facts_of(patient(), egfr(25), icd("dial", "Z99.2"))
    assert {x.key for x in f2.renal_critical} == {"egfr", "dialysis"}


def test_topical_nsaid_is_not_a_renal_factor():
    f = facts_of(patient(), med_statement("gel", cc(None, None, None, "diclofenac 1% topical gel")))
    assert not any(x.key == "nephrotoxic" for x in f.renal_factors)


def test_iga_deficiency_by_level_and_contraindication_evidence():
    anti = {"resourceType": "Observation", "id": "anti", "status": "final", "code": {"text": "Anti-IgA antibodies"},
            "valueCodeableConcept": {"text": "Positive"}, "effectiveDateTime": "2026-01-01"}
    allergy = {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": "Patient/p1"},
               "code": {"text": "Immune globulin"}, "criticality": "high",
               "reaction": [{"manifestation": [{"text": "Anaphylaxis"}]}]}
    f = facts_of(patient(), obs("iga", "2458-8", 0.03, "g/L", days_ago=200), anti, allergy)
    assert f.iga_deficiency and f.iga_deficiency[0].reference == "Observation/iga"
    assert f.anti_iga[0].reference == "Observation/anti"
    assert f.prior_ig_reaction_severe


def test_pregnancy_is_a_contraindication_fact():
    f = facts_of(patient(), ns(), icd("preg", "Z33.1"))
    assert any(c.key == "pregnancy" and c.reference == "Condition/preg" for c in f.contraindications)


# ----------------------------------------------------------------------------- draft orders
def test_draft_orders_classified_and_selection():
    rec = record(patient(), drafts=[ivig_order("a", 30, 5), draft("b", PREDNISONE, dosage(10))],
                 selections=["MedicationRequest/a"])
    f = build_facts(rec)
    a, b = f.planned_orders
    assert a.is_ig and a.ig_kind == "ivig" and a.selected
    assert a.ig_order is not None and a.ig_order.lines[0].grams == 30 and a.ig_order.lines[0].days == 5
    assert b.drug_class == GC and b.pred_eq_mg == 10 and not b.selected
    assert [o.reference for o in f.the_orders] == ["MedicationRequest/a"]


def test_scig_order_by_route():
    f = facts_of(patient(), drafts=[draft("s", IVIG | {"text": "immune globulin"}, dosage(10, "g", route="sc"))])
    assert f.planned_orders[0].ig_kind == "scig"


def test_ivig_atc_order_without_route_is_ivig():
    f = facts_of(patient(), drafts=[draft("i", cc(ATC, "J06BA02"), dosage(30, "g"))])
    assert f.planned_orders[0].ig_kind == "ivig"


# ----------------------------------------------------------------------------- real-world data
@pytest.mark.parametrize("path", sorted(SYNTHEA.glob("*.json")), ids=lambda p: p.name[:20])
def test_synthea_records_build_without_exceptions(path):
    bundle = json.loads(path.read_text())
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    rec = PatientRecord(patient_id=pid)
    rec.add(bundle)
    f = build_facts(rec)
    assert f.age is not None and f.sex in ("male", "female")
    assert f.ns_status == "none"  # none of these patients has sarcoidosis


# ----------------------------------------------------------------------------- memos and the validation cache
def test_same_record_twice_gives_the_same_facts_from_warm_caches():
    from cds_service.clinical import facts as facts_mod

    def build():
        bad = weight(70, oid="weight-bad")
        bad["interpretation"] = "H"  # invalid FHIR: the cached outcome must still skip it with a note
        rec = record(patient(), ns(), creatinine(1.0), bad, weight(71, days_ago=5),
                     med_statement("p", PREDNISONE, dose=40), obs("iga", "2458-8", 4, "mg/dL"))
        return rec, build_facts(rec)

    facts_mod.clear_caches()
    cold_rec, cold = build()
    warm_rec, warm = build()
    assert repr(cold) == repr(warm)
    assert cold_rec.notes == warm_rec.notes and any("weight-bad" in n for n in warm_rec.notes)
    assert warm.weight is not None and warm.weight.value == 71


def test_validation_cache_is_bounded_in_entries_and_bytes(monkeypatch):
    from cds_service.clinical import facts as facts_mod
    from cds_service.clinical.facts.validation import VALIDATION_MEMO

    facts_mod.clear_caches()
    monkeypatch.setattr(VALIDATION_MEMO, "max_entries", 20)
    monkeypatch.setattr(VALIDATION_MEMO, "max_bytes", 20_000)
    for i in range(200):
        note = {"text": "n" * 2_000}
        facts_of(patient(), ns(f"ns-{i}", note=[note]))
    assert 0 < len(VALIDATION_MEMO) <= 20
    assert sum(len(k) for k in VALIDATION_MEMO) <= 20_000
    facts_mod.clear_caches()


def test_obscure_observation_codes_still_found_by_text_and_site_codes():
    anti = obs("anti-1", "99999-9", 1, "1", valueString="positive", code={"text": "Anti-IgA antibody"})
    del anti["valueQuantity"]  # one value[x] only
    f = facts_of(patient(), ns(), anti)
    assert [x.reference for x in f.anti_iga] == ["Observation/anti-1"]
    # the same code again, answered from the memo
    assert [x.reference for x in facts_of(patient(), ns(), anti).anti_iga] == ["Observation/anti-1"]
