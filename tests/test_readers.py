"""Each facts reader is a pure function of the record: what it finds, and that it changes nothing."""

from __future__ import annotations

import copy
import re

import pytest

from cds_service.clinical import criteria
from cds_service.clinical.facts import derived
from cds_service.clinical.facts.allergies import anaphylaxis_after_ig, read_allergies
from cds_service.clinical.facts.conditions import read_conditions
from cds_service.clinical.facts.devices import read_devices
from cds_service.clinical.facts.encounters import read_encounters
from cds_service.clinical.facts.medications import read_medications
from cds_service.clinical.facts.model import FactRef, LabValue
from cds_service.clinical.facts.observations import read_observations
from cds_service.clinical.facts.orders import read_draft_orders
from cds_service.clinical.facts.patient import read_patient
from cds_service.clinical.terminology import GC, IG, get_terminology
from cds_service.clinical.thresholds import get_thresholds
from tests.fhir_builders import (
    IVIG,
    METHOTREXATE,
    PREDNISONE,
    cc,
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
    weight,
)

TERM = get_terminology()
TH = get_thresholds()


def _shown(part) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", repr(part))  # objects are new each time; their content is what counts


def read(reader, rec, *extra):
    """Run a reader twice on the record and check it is pure: same answer, record untouched."""
    before = copy.deepcopy((rec.patient, rec.resources, rec.draft_orders, rec.notes))
    first = reader(rec, TERM, TH, *extra)
    assert _shown(reader(rec, TERM, TH, *extra)) == _shown(first)
    assert (rec.patient, rec.resources, rec.draft_orders, rec.notes) == before
    return first


def test_patient_reader_gives_age_and_sex_or_says_they_are_unknown():
    part = read(read_patient, record(patient(age=64, sex="male")))
    assert (part.age, part.sex, part.notes) == (64, "male", [])
    missing = read(read_patient, record(ns()))
    assert missing.age is None and missing.notes == ["no Patient resource: age and sex unknown"]


def test_conditions_reader_finds_neurosarcoidosis_and_the_risk_factors_the_criteria_list():
    rec = record(patient(), ns(), icd("dvt", "I82.40", "Deep vein thrombosis", clinical="resolved"),
                 icd("imm", "Z74.09", "Immobility", clinical="resolved"), icd("ckd", "N18.4", "CKD stage 4"),
                 icd("tb", "A15.0", "Pulmonary tuberculosis"))
    part = read(read_conditions, rec)
    assert part.ns_status == "active" and [c.reference for c in part.ns_conditions] == ["Condition/ns-1"]
    # a past thrombosis counts; resolved immobility does not (when_inactive in risk_factors.yaml)
    assert [(f.key, f.reference) for f in part.thrombosis_factors] == [("history", "Condition/dvt")]
    assert [f.key for f in part.renal_critical] == ["ckd-severe"]
    assert [(c.key, c.detail.split("; ")[-1]) for c in part.contraindications] == [
        ("renal", "affects methotrexate, leflunomide"), ("tuberculosis", "affects anti-TNF, high-dose glucocorticoid")]
    assert "Condition/ns-1" in part.ns_references and "Condition/dvt" in part.by_reference


def test_a_manifestation_code_alone_is_no_neurosarcoidosis():
    part = read(read_conditions, record(patient(), icd("cn7", "G51.0", "Bell's palsy")))
    assert part.ns_status == "none" and part.possible_ns == []


def test_observations_reader_takes_the_latest_recent_lab_and_names_unusable_units():
    rec = record(patient(), creatinine(1.0, days_ago=20, oid="old"), creatinine(1.4, days_ago=1, oid="new"),
                 egfr(50), weight(80), height(180), obs("w-bad", "29463-7", 150, "stone", days_ago=1))
    part = read(read_observations, rec)
    assert part.creatinine.reference == "Observation/new" and part.creatinine.value == 1.4
    assert [lv.reference for lv in part.creatinine_series][:2] == ["Observation/new", "Observation/old"]
    assert part.egfr.value == 50 and part.weight.value == 80 and part.height.value == 180
    assert any("w-bad" in p for p in part.unit_problems)


def test_medications_reader_gives_exposures_by_class_with_daily_dose():
    rec = record(patient(), med_statement("p", PREDNISONE, dose=dosage(40)),
                 med_statement("m", METHOTREXATE, dose=dosage(15, period=1, period_unit="wk"), status="stopped"))
    part = read(read_medications, rec, {})
    (pred,) = part.exposures[GC]
    assert pred.current and pred.pred_eq_mg == 40
    assert [e.status for e in part.exposures["second-line"]] == ["past"]


def test_medications_reader_reads_the_reason_from_the_conditions_it_is_given():
    mst = med_statement("p", PREDNISONE, dose=dosage(40))
    mst["reasonReference"] = [{"reference": "Condition/ns-1"}]
    rec = record(patient(), ns(), mst)
    conditions = read_conditions(rec, TERM, TH)
    with_reason = read(read_medications, rec, conditions.by_reference)
    without = read(read_medications, rec, {})
    assert with_reason.exposures[GC][0].reason_sarcoid is True
    assert without.exposures[GC][0].reason_sarcoid is False  # a reason is recorded, not a known one


def test_allergies_reader_and_anaphylaxis_after_immune_globulin():
    allergy = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"},
               "code": IVIG, "criticality": "high"}
    part = read(read_allergies, record(patient(), allergy))
    # no manifestation recorded, criticality high: counted as serious (decision 37)
    assert [(f.reference, severity) for f, severity in part.ig_reactions] == [("AllergyIntolerance/a1", "severe")]
    ana = [(None, FactRef("Anaphylaxis", "x", "Condition/a"))]
    assert anaphylaxis_after_ig(ana, []) == []  # no immune globulin given: not a reaction to it
    given = read_medications(record(patient(), med_admin("g", IVIG, days_ago=30)), TERM, TH, {}).exposures[IG]
    assert anaphylaxis_after_ig(ana, [e.start for e in given]) == [ana[0][1]]


def test_devices_reader_finds_a_central_line():
    dev = {"resourceType": "Device", "id": "d1", "status": "active", "type": cc(text="PICC line")}
    factors, validator = read(read_devices, record(patient(), dev))
    assert [(f.key, f.reference) for f in factors] == [("catheter", "Device/d1")] and validator.notes == []


def test_encounters_reader_needs_a_neurosarcoidosis_condition():
    enc = {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
           "diagnosis": [{"condition": {"reference": "Condition/ns-1"}}]}
    rec = record(patient(), ns(), enc)
    found, _ = read(read_encounters, rec, {"Condition/ns-1"})
    assert [f.reference for f in found] == ["Encounter/e1"]
    assert read(read_encounters, rec, set())[0] == []


def test_draft_orders_reader_gives_tier_route_and_ivig_dose():
    rec = record(patient(), drafts=[ivig_order(g_per_day=35, days=2), draft("p", PREDNISONE, dosage(60))])
    part = read(read_draft_orders, rec)
    ivig, pred = part.planned_orders
    assert ivig.is_ig and ivig.ig_kind == "ivig" and ivig.ig_order is not None
    assert (ivig.ig_order.lines[0].grams, ivig.ig_order.lines[0].days) == (35, 2)
    assert pred.drug_class == GC and pred.pred_eq_mg == 60 and pred.is_ladder


@pytest.mark.parametrize(("scr", "age", "sex", "expected"), [(1.0, 60, "female", 64), (1.0, 60, "male", 86)])
def test_ckd_epi_2021(scr, age, sex, expected):
    lv = LabValue("Serum creatinine", scr, "mg/dL", None, "Observation/c", f"{scr} mg/dL")
    assert derived.ckd_epi_2021(lv, age, sex).value == expected
    assert derived.ckd_epi_2021(lv, age, None) is None


def test_body_size_uses_the_adjusted_weight_above_the_bmi_threshold():
    w = LabValue("Body weight", 120, "kg", None, "Observation/w", "120 kg")
    h = LabValue("Body height", 170, "cm", None, "Observation/h", "170 cm")
    size = derived.body_size(w, h, "female", TH)
    assert round(size.bmi, 1) == 41.5 and size.adjusted_weight is not None
    assert size.dosing_weight_basis == ("adjusted" if TH.use_adjusted_weight else "actual")
    assert derived.body_size(w, None, "female", TH).dosing_weight == 120


def test_every_risk_factor_names_a_known_category_and_fact_list():
    from cds_service.clinical.facts.conditions import ConditionsPart
    from cds_service.clinical.terminology import CATEGORIES

    fields = set(ConditionsPart.__dataclass_fields__)
    for rf in criteria.risk_factors():
        assert set(rf.categories) <= set(CATEGORIES), rf
        assert rf.feeds in fields and (not rf.also or rf.also in fields), rf
    from cds_service.clinical.terminology import INGREDIENTS

    drugs = {i.key for i in INGREDIENTS if i.drug_class} | {i.drug_class for i in INGREDIENTS if i.drug_class}
    for c in criteria.contraindications():
        assert c.category in CATEGORIES and set(c.withholds) <= drugs, c  # ingredient keys or classes
    for c in criteria.derived_contraindications().values():
        assert set(c.withholds) <= drugs, c
