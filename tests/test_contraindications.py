"""No one-click order against a recorded contraindication, in any code system (decisions 28, 29 and 39).

Every code of every contraindication value set the engine holds (SNOMED CT, ICD-10-CM, the WHO edition of
ICD-10, and the phrases a text-only problem is read with) is put, one at a time, into the chart of a patient
at each stage whose card proposes an order; the order the contraindication concerns must then not be
proposed. The table below is the clinical expectation, written independently of the engine's own mapping;
a contraindication value set the table does not know makes the test fail, so a new one cannot slip in
without saying which orders it withholds.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.clinical.engine import evaluate
from cds_service.clinical.terminology import ICD10, SNOMED, get_terminology
from cds_service.clinical.text_findings import text_findings
from tests.fhir_builders import (
    ATC,
    IVIG,
    LNC,
    METHOTREXATE,
    PREDNISONE,
    cc,
    condition,
    creatinine,
    day,
    dosage,
    draft,
    egfr,
    height,
    ivig_order,
    med_statement,
    ns,
    obs,
    patient,
    record,
    weight,
)

# value set -> the suggested orders it must withhold (ingredient names as the suggestions carry them)
WITHHOLDS: dict[str, set[str]] = {
    "contra.tuberculosis": {"infliximab"},  # glucocorticoid stays proposed: latent TB calls for prophylaxis
    "contra.demyelinating": {"infliximab"},
    "contra.heart-failure": {"infliximab"},
    "contra.malignancy": {"infliximab"},
    "contra.liver": {"methotrexate"},
    # CKD 4-5 is also severe kidney impairment for IVIG: no one-click IVIG order (rules.ivig_indication)
    "contra.renal": {"methotrexate", "immune globulin"},
    "contra.fungal": {"infliximab", "methotrexate", "prednisone"},
    "pregnancy": {"methotrexate"},
}
# the code systems a contraindication may arrive in
SYSTEM_URIS = {SNOMED: ("http://snomed.info/sct",),
               ICD10: ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10")}
DRUG_CODES = {"prednisone": {"312615", "8640", "H02AB07"}, "methotrexate": {"105585", "6851", "1441402", "L04AX03"},
              "infliximab": {"310994", "191831", "L04AB02"}, "immune globulin": {"J06BA02"}}


# ------------------------------------------------------------------------------------------ patients
def _relapse() -> dict[str, Any]:
    return condition("relapse-1", cc("http://snomed.info/sct", "230193008", "Neurosarcoidosis"),
                     clinical="recurrence", onset_days=10)


def _body() -> list[dict[str, Any]]:
    return [weight(70), height(170), creatinine(0.8), egfr(95)]


def s1_untreated(*extra: dict[str, Any]):
    """Untreated neurosarcoidosis, IVIG being ordered: the S1 card proposes prednisone."""
    order = ivig_order(g_per_day=28, days=5)
    return record(patient(45), ns(onset_days=30), *_body(), *extra, drafts=[order],
                  selections=[f"MedicationRequest/{order['id']}"])


def s3r_relapse_on_prednisone(*extra: dict[str, Any]):
    """Relapse after 10 weeks of prednisone 60 mg, prednisone re-escalated: methotrexate and IVIG proposed."""
    pred = med_statement("pred-1", PREDNISONE, start_days=80, dose=dosage(60, route="oral"),
                         reason=cc(text="neurosarcoidosis"))
    order = draft("pred-order-1", PREDNISONE, dosage(60, route="oral"))
    return record(patient(45), ns(onset_days=90), pred, _relapse(), *_body(), *extra, drafts=[order],
                  selections=[f"MedicationRequest/{order['id']}"])


def s5_relapse_on_methotrexate(*extra: dict[str, Any]):
    """Relapse after prednisone and 7 months of methotrexate: infliximab proposed."""
    pred = med_statement("pred-1", PREDNISONE, status="completed", start_days=300, end_days=200,
                         dose=dosage(60, route="oral"), reason=cc(text="neurosarcoidosis"))
    mtx = med_statement("mtx-1", METHOTREXATE, start_days=210, dose=dosage(20, period=1, period_unit="wk",
                                                                            route="oral"),
                        reason=cc(text="neurosarcoidosis"))
    order = draft("pred-order-1", PREDNISONE, dosage(40, route="oral"))
    return record(patient(45), ns(onset_days=320), pred, mtx, _relapse(), *_body(), *extra, drafts=[order],
                  selections=[f"MedicationRequest/{order['id']}"])


SCENARIOS = {"S1": (s1_untreated, {"prednisone"}), "S3R": (s3r_relapse_on_prednisone, {"methotrexate",
                                                                                        "immune globulin"}),
             "S5": (s5_relapse_on_methotrexate, {"infliximab"})}


def proposed(rec) -> set[str]:
    """The drugs the cards propose as one-click orders."""
    ev = evaluate(rec, "order-select")
    out: set[str] = set()
    for c in ev.cards:
        for s in c.suggestions or []:
            for a in s.actions or []:
                res = a.resource if isinstance(a.resource, dict) else {}
                codes = {cd.get("code") for cd in (res.get("medicationCodeableConcept") or {}).get("coding", [])}
                out |= {drug for drug, known in DRUG_CODES.items() if codes & known}
    return out


# ------------------------------------------------------------------------------------------ contraindications
def contraindication_codes() -> list[tuple[str, str, str, str]]:
    """(value set, system URI, code, display) for every member of every contraindication value set."""
    term = get_terminology()
    out = []
    for name in sorted(WITHHOLDS):
        for e in term.members(name):
            if not e.verified or e.system not in SYSTEM_URIS:
                continue
            code = e.code if e.system != ICD10 else (e.code[:3] + ("." + e.code[3:] if len(e.code) > 3 else ""))
            for uri in SYSTEM_URIS[e.system]:
                out.append((name, uri, code, e.display))
    return sorted(set(out))


# problem-list wording as clinicians type it, one per value set (decision 29 reads them)
TEXTS = {
    "contra.tuberculosis": "Pulmonary tuberculosis, on RIPE therapy",
    "contra.demyelinating": "Multiple sclerosis (relapsing-remitting)",
    "contra.heart-failure": "HFrEF, EF 30%",
    "contra.malignancy": "Metastatic melanoma",
    "contra.liver": "Alcoholic cirrhosis",
    "contra.renal": "CKD stage 4 (nephrocalcinosis)",
    "contra.fungal": "Disseminated histoplasmosis",
    "pregnancy": "Pregnant, 14 weeks",
}


def contraindication_texts() -> list[tuple[str, str]]:
    """(value set, problem text) for a text-only problem of each contraindication (decision 29)."""
    return sorted(TEXTS.items())


def _cases() -> list[object]:
    out = []
    for name, uri, code, display in contraindication_codes():
        for stage, (_, offers) in SCENARIOS.items():
            if WITHHOLDS[name] & offers:
                out.append(pytest.param(stage, name, cc(uri, code, display), id=f"{stage}-{name}-{uri[-9:]}-{code}"))
    for name, phrase in contraindication_texts():
        for stage, (_, offers) in SCENARIOS.items():
            if WITHHOLDS[name] & offers:
                out.append(pytest.param(stage, name, cc(text=phrase), id=f"{stage}-{name}-text"))
    return out


def test_every_contraindication_value_set_has_an_expectation():
    term = get_terminology()
    held = {e.name for e in term.entries if e.name.startswith("contra.")}
    assert held <= set(WITHHOLDS), held - set(WITHHOLDS)


@pytest.mark.parametrize("stage", sorted(SCENARIOS))
def test_the_scenarios_propose_their_orders_without_a_contraindication(stage):
    build, offers = SCENARIOS[stage]
    assert offers <= proposed(build()), stage


@pytest.mark.parametrize(("stage", "value_set", "concept"), _cases())
def test_no_one_click_order_against_a_recorded_contraindication(stage, value_set, concept):
    build, offers = SCENARIOS[stage]
    contra = condition("contra-1", concept, onset_days=60)
    offered = proposed(build(contra))
    withheld = WITHHOLDS[value_set] & offers
    assert not offered & withheld, f"{value_set} {concept}: {sorted(offered & withheld)} still proposed"
    assert offers - withheld <= offered, f"{value_set} withheld more than its own drugs: {sorted(offers - offered)}"


def test_low_egfr_withholds_methotrexate():
    """eGFR below 30 is a contraindication read from a result, not a code."""
    rec = s3r_relapse_on_prednisone(egfr(24, oid="egfr-low", days_ago=1))
    assert "methotrexate" not in proposed(rec)


def test_iga_deficiency_with_anti_iga_antibodies_withholds_ivig():
    """The label's contraindication: IgA deficiency with antibodies against IgA."""
    iga = condition("iga-def", cc("http://hl7.org/fhir/sid/icd-10-cm", "D80.2",
                                   "Selective deficiency of immunoglobulin A [IgA]"), onset_days=900)
    anti = obs("anti-iga", "16131-5", 1, "1", valueCodeableConcept=cc(text="Positive"))
    anti.pop("valueQuantity")
    anti["code"] = cc(LNC, "16131-5", "IgA Ab [Presence] in Serum", "Anti-IgA antibodies")
    assert "immune globulin" in proposed(s3r_relapse_on_prednisone())
    assert "immune globulin" not in proposed(s3r_relapse_on_prednisone(iga, anti))


def test_the_enumeration_covers_every_code_system():
    systems = {uri for _, uri, _, _ in contraindication_codes()}
    assert {"http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"} <= systems
    assert {name for name, _ in contraindication_texts()} == set(WITHHOLDS)
    for name, text in contraindication_texts():
        assert name in text_findings(text), (name, text)
    assert day(0) and ATC and IVIG  # builders shared with the other engine tests
