import pytest

from cds_service.clinical.facts import build_facts
from cds_service.clinical.stages import compute_stage
from cds_service.clinical.thresholds import Thresholds
from tests.fhir_builders import (
    INFLIXIMAB,
    METHOTREXATE,
    METHYLPRED,
    MMF,
    PREDNISONE,
    SCT,
    cc,
    condition,
    dosage,
    draft,
    icd,
    med_admin,
    med_statement,
    ns,
    ns_patient,
    patient,
    record,
    sct,
)

TH = Thresholds()


def stage_of(rec, th=TH):
    return compute_stage(build_facts(rec, th), th)


def pred(mid="pred", mg=40, start=120, **kw):
    return med_statement(mid, PREDNISONE, dose=dosage(mg, route="oral"), start_days=start, **kw)


def relapse(days_ago, cid="relapse-1"):
    return condition(cid, cc(SCT, "192673008", "Sarcoid meningitis"), clinical="recurrence", onset_days=days_ago,
                     recorded_days=days_ago)


def mtx(start=200, weekly=15, **kw):
    return med_statement("mtx", METHOTREXATE, dose=dosage(weekly, period_unit="wk"), start_days=start, **kw)


# ------------------------------------------------------------------------------------------ S0 gate
def test_s0_without_neurosarcoidosis():
    assert stage_of(record(patient(), icd("lung", "D86.0"), pred())).stage == "S0"


def test_s0_paediatric_a20():
    s = stage_of(record(patient(age=16), ns(), pred()))
    assert s.stage == "S0" and "A20" in s.scope_note


def test_s0_resolved_without_drugs_a14():
    assert stage_of(record(patient(), ns(clinical="resolved"))).stage == "S0"


def test_remission_on_maintenance_a14():
    assert stage_of(record(patient(), ns(clinical="remission"), mtx())).stage == "S4"


def test_sfn_only_is_its_own_pathway():
    s = stage_of(record(patient(), icd("s", "D86.9"),
                        condition("sfn", cc(SCT, "709489006", "Small fiber neuropathy"))))
    assert s.stage == "S0" and s.sfn_pathway and not s.in_scope


# ------------------------------------------------------------------------------------------ S1-S2b
def test_s1_untreated():
    s = stage_of(ns_patient())
    assert s.stage == "S1" and s.in_scope and not s.conditional


def test_s1_conditional_when_possible_ns():
    s = stage_of(record(patient(), sct("s", "31541009"), icd("bell", "G51.0", onset_days=None)))
    assert s.stage == "S1" and s.conditional


def test_draft_orders_do_not_change_the_stage():
    assert stage_of(ns_patient(drafts=[draft("o", PREDNISONE, dosage(60))])).stage == "S1"


@pytest.mark.parametrize(("mg", "stage"), [(20, "S2"), (19, "S2b"), (60, "S2")])
def test_first_line_threshold_is_20mg(mg, stage):
    assert stage_of(ns_patient(pred(mg=mg, start=5))).stage == stage


def test_threshold_is_configurable():
    th = Thresholds(gc_high_dose_mg=30, prednisone_suggested_mg_day=30)  # the proposed dose must stay a trial
    assert stage_of(ns_patient(pred(mg=20, start=5)), th).stage == "S2b"


def test_s2b_free_text_dose_unknown_a8():
    free = med_statement("p", PREDNISONE, dose={"text": "taper as directed"}, start_days=10)
    s = stage_of(ns_patient(free))
    assert s.stage == "S2b" and not s.gc_dose_known


def test_a6_taper_uses_maximum_dose():
    s = stage_of(ns_patient(pred("p1", 40, start=60, status="completed", end_days=30), pred("p2", 10, start=30)))
    assert s.stage == "S2" and s.gc_max_pred_eq == 40


def test_a4_hydrocortisone_replacement_ignored():
    hc = med_statement("hc", cc(None, None, None, "hydrocortisone 10 mg tablet"), dose=dosage(10, freq=2))
    assert stage_of(ns_patient(hc)).stage == "S1"


def test_a3_short_prednisone_burst_for_asthma_ignored():
    burst = pred("burst", 40, start=300, status="completed", end_days=295,
                 reason=cc("http://hl7.org/fhir/sid/icd-10-cm", "J45.901", "Asthma exacerbation"))
    assert stage_of(ns_patient(burst)).stage == "S1"


# ------------------------------------------------------------------------------------------ S3R / S3I
def test_s3r_relapse_after_minimum_trial():
    s = stage_of(ns_patient(pred(start=60), relapse(30)))  # 30 days on 40 mg: a trial, not yet dependence
    assert s.stage == "S3R"
    assert any(r.reference == "Condition/relapse-1" for r in s.reasons)


def test_relapse_before_minimum_trial_does_not_count():
    assert stage_of(ns_patient(pred(start=40), relapse(30))).stage == "S2"  # 10 days < 14


def test_relapse_on_low_dose_is_not_a_failed_trial():
    assert stage_of(ns_patient(pred(mg=10, start=120), relapse(30))).stage == "S2b"


def test_iv_pulse_counts_as_trial_and_escalation():
    s = stage_of(ns_patient(pred(start=60), med_admin("pulse", METHYLPRED, days_ago=20, dose_mg=1000)))
    assert s.stage == "S3R"
    assert any("pulse" in r.fact for r in s.reasons)


def test_s3i_stopped_for_psychosis_a2():
    s = stage_of(ns_patient(pred(status="stopped", end_days=30, status_reason="steroid psychosis")))
    assert s.stage == "S3I"


def test_s3i_gc_adverse_effect_condition():
    s = stage_of(ns_patient(pred(start=120), icd("cush", "E24.2", onset_days=20)))
    assert s.stage == "S3I"


def test_s3i_glucocorticoid_dependence():
    s = stage_of(ns_patient(pred("p1", 40, start=200, status="completed", end_days=100), pred("p2", 15, start=100)))
    assert s.stage == "S3I" and s.gc_dependence is not None


def test_decision_50_dependence_wins_over_continued_disease():
    # 40 mg/day for 120 days (dependence) and a relapse 30 days ago (continued disease): S3I, with both facts
    s = stage_of(ns_patient(pred(start=120), relapse(30)))
    assert s.stage == "S3I" and s.gc_dependence is not None and s.gc.refractory
    assert {"Condition/relapse-1", "MedicationStatement/pred"} <= {r.reference for r in s.reasons}


def test_decision_50_relapse_below_the_dependence_dose_stays_s3r():
    taper = (pred("p1", 40, start=200, status="completed", end_days=100), pred("p2", 10, start=100))
    s = stage_of(ns_patient(*taper, relapse(30)))
    assert s.stage == "S3R" and s.gc_dependence is None


def test_a7_relapse_after_completed_course():
    # decision 44 (over A7): a relapse after the course ended is not refractoriness; treatment to restart
    s = stage_of(ns_patient(pred(start=300, status="completed", end_days=200), relapse(30)))
    assert s.stage == "S1" and s.prior_therapy and not s.gc.refractory


# ------------------------------------------------------------------------------------------ S4 / S5
def test_s4_second_line_started_with_gc_a10():
    assert stage_of(ns_patient(pred(start=56), mtx(start=56))).stage == "S4"


def test_s4_relapse_before_12_weeks_of_mtx_is_not_refractory():
    assert stage_of(ns_patient(pred(start=200), mtx(start=70), relapse(10))).stage == "S4"


def test_s5_relapse_after_12_weeks_of_mtx():
    s = stage_of(ns_patient(pred(start=300), mtx(start=200), relapse(10)))
    assert s.stage == "S5"


def test_subtherapeutic_mtx_does_not_complete_a_trial():
    s = stage_of(ns_patient(pred(start=300), mtx(start=200, weekly=7.5), relapse(10)))
    assert s.stage == "S4" and s.mtx_subtherapeutic


def test_s5_all_second_line_stopped_for_intolerance():
    s = stage_of(ns_patient(pred(start=300),
                            mtx(start=200, status="stopped", end_days=100, status_reason="hepatotoxicity"),
                            med_statement("mmf", MMF, status="stopped", start_days=90, end_days=20,
                                          status_reason="cytopenia")))
    assert s.stage == "S5"


# ------------------------------------------------------------------------------------------ S6 / S7
def _ifx(days_ago, n):
    return med_admin(f"ifx-{n}", INFLIXIMAB, days_ago=days_ago, dose_mg=350)


def test_s6_on_infliximab():
    assert stage_of(ns_patient(pred(start=300), mtx(), _ifx(60, 1), _ifx(46, 2))).stage == "S6"


def test_a13_early_anti_tnf_without_mtx_is_s6():
    assert stage_of(ns_patient(pred(start=100), _ifx(20, 1))).stage == "S6"


def test_s7_relapse_after_three_infusions():
    s = stage_of(ns_patient(pred(start=400), mtx(start=350), _ifx(200, 1), _ifx(186, 2), _ifx(158, 3),
                            _ifx(60, 4), relapse(10)))
    assert s.stage == "S7"


def test_relapse_after_two_infusions_is_not_s7():
    assert stage_of(ns_patient(pred(start=400), mtx(start=350), _ifx(30, 1), _ifx(16, 2), relapse(5))).stage == "S6"


# ------------------------------------------------------------------------------------------ A9
def test_a9_mtx_daily_flagged():
    daily = med_statement("mtx", METHOTREXATE, dose=dosage(15))
    s = stage_of(ns_patient(daily))
    assert s.mtx_daily and s.mtx_daily[0].reference == "MedicationStatement/mtx"
    s2 = stage_of(ns_patient(drafts=[draft("o", METHOTREXATE, dosage(15, text="15 mg daily"))]))
    assert s2.mtx_daily
