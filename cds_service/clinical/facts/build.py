"""``build_facts``: the readers, each a pure function of the record, composed into :class:`Facts`.

Each reader returns its part (with the notes it made); a reader that needs another's result (the
medication reasons need the Conditions' value sets) takes it as an argument. The derived calculations
then combine the parts.
"""

from __future__ import annotations

from ..record import PatientRecord
from ..terminology import IG, Terminology, get_terminology
from ..thresholds import Thresholds, get_thresholds
from . import derived
from .allergies import anaphylaxis_after_ig, read_allergies
from .conditions import read_conditions
from .devices import read_devices
from .encounters import read_encounters
from .medications import read_medications
from .model import Facts
from .observations import read_observations
from .orders import read_draft_orders
from .patient import now_of, read_patient


def patient_id_of(record: PatientRecord) -> str:
    pid = record.patient_id or (record.patient or {}).get("id") or "unknown"
    return pid[len("Patient/"):] if pid.startswith("Patient/") else pid


def build_facts(record: PatientRecord, thresholds: Thresholds | None = None,
                terminology: Terminology | None = None) -> Facts:
    """The facts of ``record``. The notes of what was skipped are also added to ``record.notes``."""
    th = thresholds or get_thresholds()
    term = terminology or get_terminology()
    pid = patient_id_of(record)
    patient = read_patient(record, term, th)
    cond = read_conditions(record, term, th)
    labs = read_observations(record, term, th)
    meds = read_medications(record, term, th, cond.by_reference, cond.ns_references)
    allergies = read_allergies(record, term, th)
    catheters, dev = read_devices(record, term, th)
    inpatient, enc = read_encounters(record, term, th, cond.ns_references)
    orders = read_draft_orders(record, term, th)

    ig_starts = [e.start for e in meds.exposures.get(IG, []) if e.start]
    after_ig = anaphylaxis_after_ig(cond.anaphylaxis, ig_starts)
    size = derived.body_size(labs.weight, labs.height, patient.sex, th, labs.bmi)
    egfr, egfr_note = derived.egfr_choice(labs.egfr_results, labs.creatinine_results, patient.age, patient.sex,
                                          labs.height)
    pregnancy = cond.pregnancy + labs.pregnancy
    aki = derived.kdigo_aki(labs.creatinine_series, th)
    hyperviscosity = cond.hyperviscosity + labs.hyperviscosity
    reactions = derived.ig_reactions(cond.prior_ig_reaction, after_ig, allergies.ig_reactions)
    parts = (patient, cond, labs, meds, allergies, dev, enc, orders)
    for p in parts:
        record.notes.extend(p.skipped)
    record.notes.extend(labs.unit_problems)
    return Facts(
        patient_id=pid, now=now_of(record), patient_ref=f"Patient/{pid}", age=patient.age, sex=patient.sex,
        ns_status=cond.ns_status, ns_in_remission=cond.ns_in_remission, ns_conditions=cond.ns_conditions,
        possible_ns=cond.possible_ns, sarcoidosis=cond.sarcoidosis, ns_onset=cond.ns_onset, sfn=cond.sfn,
        conduction_block=cond.conduction_block, bulbar=cond.bulbar, relapses=cond.relapses,
        inpatient_for_ns=inpatient,
        exposures=meds.exposures, risk_drugs=meds.risk_drugs, gc_intolerance=cond.gc_intolerance,
        is_intolerance=cond.is_intolerance, drug_allergies=allergies.drug_allergies,
        egfr=egfr, egfr_note=egfr_note, creatinine=labs.creatinine, creatinine_series=labs.creatinine_series,
        aki=cond.aki + ([aki.fact()] if aki else []),
        renal_factors=derived.renal_factors(egfr, cond.renal_factors + labs.renal_factors, patient.age,
                                            f"Patient/{pid}", labs.hba1c, meds.risk_drugs, th),
        renal_critical=derived.renal_critical(egfr, cond.renal_critical, aki, th),
        weight=labs.weight, weight_stated=labs.weight_stated, height=labs.height, bmi=size.bmi, ibw=size.ibw,
        adjusted_weight=size.adjusted_weight, dosing_weight=size.dosing_weight,
        dosing_weight_basis=size.dosing_weight_basis,
        thrombosis_factors=derived.thrombosis_factors(cond.thrombosis_factors + catheters, patient.age,
                                                      f"Patient/{pid}", meds.risk_drugs, size.bmi, size.bmi_reference,
                                                      hyperviscosity, cond.heart_failure, pregnancy, th),
        hyperviscosity=hyperviscosity,
        iga_deficiency=derived.iga_deficiency(cond.iga_deficiency, labs.iga_level, th), iga_level=labs.iga_level,
        anti_iga=labs.anti_iga,
        prior_ig_reaction=reactions.all, prior_ig_reaction_severe=reactions.severe,
        prior_ig_reaction_mild=reactions.mild, prior_ig_reaction_unknown=reactions.unknown,
        anticoagulants=meds.anticoagulants,
        heart_failure=cond.heart_failure,
        contraindications=derived.contraindications(cond.contraindications, pregnancy, egfr, th),
        pregnancy=pregnancy, planned_orders=orders.planned_orders, unit_problems=labs.unit_problems,
        notes=[n for p in parts for n in p.notes],
    )
