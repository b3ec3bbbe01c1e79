"""The same patient gets the same answer (decision 43), as properties over every fixture.

Each property takes a fixture Bundle, changes how the chart is written without changing what it says, and
evaluates both through the same path an EHR call takes (prefetch built from the Bundle, then the engine).
The answer must not move: the stage, the rule ids with their indicators, the suggested orders' codes, and
the computed numbers (eGFR, creatinine, weights, BMI, IgA, the course the dose card proposes).

The changes (hypothesis draws which resource, which coding, which unit, which order):

- the Bundle's entries shuffled;
- a concept written in another code system of its value set (one of its own codings kept alone, or an
  equivalent code from the table below), when the value sets it belongs to stay the same;
- a laboratory result or body measure reported in another unit (µmol/L for mg/dL, lb for kg, ...);
- an unrelated drug, started and stopped for another illness before anything else in the chart, added;
- a resource (not a draft order) duplicated under another id, as a second interface would send it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.clinical import units
from cds_service.clinical.engine import Evaluation, evaluate
from cds_service.clinical.terminology import get_terminology
from cds_service.evaluate import build_request, service_for
from cds_service.hooks import evaluation_time, parse_call
from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

ROOT = Path(__file__).resolve().parents[1] / "fixtures"
STEMS = [p.stem for p in sorted((ROOT / "fhir").glob("*.json"))]
PROPERTY = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))



# ------------------------------------------------------------------------------------------ evaluating
def load(stem: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import yaml

    bundle = json.loads((ROOT / "fhir" / f"{stem}.json").read_text(encoding="utf-8"))
    expected = yaml.safe_load((ROOT / "expected" / f"{stem}.yaml").read_text(encoding="utf-8"))
    return bundle, expected


def evaluation_of(bundle: dict[str, Any], hook: str, order: str) -> Evaluation:
    """The engine's evaluation of ``bundle`` as an EHR call would deliver it (prefetch, evaluation time)."""
    request = build_request(bundle, hook, order)
    call = parse_call(service_for(hook), request)
    policy = GatherPolicy(deadline_seconds=1.0)
    record = asyncio.run(gather(call, prefetch_only(call), policy))  # the Bundle's data is all in prefetch
    now = evaluation_time(request.get("extension"))
    if now is not None:
        record.now = now
    return evaluate(record, hook)


def _num(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _suggested(card: Any) -> list[tuple[str, ...]]:
    out = []
    for s in card.suggestions or []:
        for a in s.actions or []:
            res = a.resource if isinstance(a.resource, dict) else {}
            codes = sorted(cd.get("code", "") for cd in (res.get("medicationCodeableConcept") or res.get("code")
                                                          or {}).get("coding", []) if isinstance(cd, dict))
            out.append(tuple(codes))
    return sorted(out)


def answer(ev: Evaluation) -> dict[str, Any]:
    """What must not change: stage, cards by rule id and indicator, suggestions, computed numbers."""
    f = ev.facts
    return {
        "stage": ev.stage,
        "cards": sorted(Counter((rid, str(c.indicator)) for rid, c in zip(ev.rule_ids, ev.cards, strict=True)).items()),
        "suggestions": sorted((rid, _suggested(c)) for rid, c in zip(ev.rule_ids, ev.cards, strict=True)
                              if c.suggestions),
        "egfr": _num(f.egfr.value if f.egfr else None),
        "creatinine": _num(f.creatinine.value if f.creatinine else None, 2),
        "weight": _num(f.weight.value if f.weight else None),
        "dosing_weight": _num(f.dosing_weight),
        "bmi": _num(f.bmi),
        "iga": _num(f.iga_level.value if f.iga_level else None),
        "thrombosis_factors": f.thrombosis_factor_count,
    }


_BASELINE: dict[str, dict[str, Any]] = {}


def baseline(stem: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    bundle, expected = load(stem)
    if stem not in _BASELINE:
        _BASELINE[stem] = answer(evaluation_of(bundle, expected["hook"], expected["order"]))
    return bundle, expected, _BASELINE[stem]


def assert_same(stem: str, changed: dict[str, Any], what: str) -> None:
    bundle, expected, before = baseline(stem)
    after = answer(evaluation_of(changed, expected["hook"], expected["order"]))
    diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not diff, f"{stem}: {what} changed the answer: {diff}"


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def _is_draft(r: dict[str, Any]) -> bool:
    return r.get("resourceType") == "MedicationRequest" and r.get("status") == "draft"


# ------------------------------------------------------------------------------------------ recoding
# Equivalent codes of one concept in the other code system (each pair is checked against the value sets
# before it is used: a swap that changes the value sets a concept belongs to is not made).
_CM, _WHO, _SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10", "http://snomed.info/sct"
_PAIRS = [
    ((_CM, "D86.81"), (_SCT, "192673008"), "Sarcoid meningitis"),
    ((_SCT, "77386006"), (_CM, "Z33.1"), "Pregnant state"),
    ((_CM, "Z33.1"), (_WHO, "Z33"), "Pregnant state, incidental"),
    ((_CM, "D80.2"), (_SCT, "29260007"), "Selective IgA deficiency"),
    ((_CM, "N18.4"), (_SCT, "431857002"), "Chronic kidney disease stage 4"),
    ((_CM, "I50.9"), (_SCT, "84114007"), "Heart failure"),
    ((_CM, "I10"), (_SCT, "38341003"), "Hypertensive disorder"),
    ((_CM, "I82.409"), (_SCT, "128053003"), "Deep venous thrombosis"),
    ((_CM, "I26.99"), (_SCT, "59282003"), "Pulmonary embolism"),
    ((_CM, "E11.9"), (_SCT, "44054006"), "Type 2 diabetes mellitus"),
    ((_CM, "G35"), (_SCT, "24700007"), "Multiple sclerosis"),
]
EQUIVALENT: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
for (a, b, display) in _PAIRS:
    EQUIVALENT.setdefault(a, []).append((*b, display))
    EQUIVALENT.setdefault(b, []).append((*a, display))
_CONCEPT_KEYS = {"Condition": ("code",), "MedicationStatement": ("medicationCodeableConcept",),
                 "MedicationRequest": ("medicationCodeableConcept",),
                 "MedicationAdministration": ("medicationCodeableConcept",),
                 "AllergyIntolerance": ("code",)}


def _same_meaning(old: dict[str, Any], new: dict[str, Any], medication: bool) -> bool:
    term = get_terminology()
    a, b = term.match(old, medication=medication), term.match(new, medication=medication)
    return bool(a.names) and a.names == b.names and (a.ingredient == b.ingredient)


def recodings(bundle: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """Every (entry index, element, new concept) that writes a concept in another code system of its value set."""
    out = []
    for i, r in enumerate(resources(bundle)):
        for key in _CONCEPT_KEYS.get(r.get("resourceType"), ()):
            concept = r.get(key)
            if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
                continue
            medication = key == "medicationCodeableConcept"
            codings = [c for c in concept["coding"] if isinstance(c, dict)]
            options = []
            if len(codings) > 1:
                options += [[c] for c in codings]
            for c in codings:
                for system, code, display in EQUIVALENT.get((c.get("system"), c.get("code")), ()):
                    options.append([{"system": system, "code": code, "display": display}])
            for coding in options:
                new = {**concept, "coding": coding}
                if new != concept and _same_meaning(concept, new, medication):
                    out.append((i, key, new))
    return out


# ------------------------------------------------------------------------------------------ units
# kind by LOINC, and the other unit each kind may be reported in (a UCUM code the converter knows)
_KIND = {"2160-0": "creatinine", "38483-4": "creatinine", "14682-9": "creatinine", "29463-7": "weight",
         "3141-9": "weight", "8302-2": "height", "2458-8": "iga", "98979-8": "egfr", "62238-1": "egfr"}
_OTHER_UNITS = {"creatinine": ("umol/L", "mg/dL", "mmol/L"), "weight": ("[lb_av]", "kg", "g"),
                "height": ("[in_i]", "cm", "m"), "iga": ("g/L", "mg/dL", "mg/L"),
                "egfr": ("mL/s/{1.73_m2}", "mL/min/{1.73_m2}")}


def unit_changes(bundle: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for i, r in enumerate(resources(bundle)):
        if r.get("resourceType") != "Observation" or not isinstance(r.get("valueQuantity"), dict):
            continue
        codes = [c.get("code") for c in (r.get("code") or {}).get("coding", []) if isinstance(c, dict)]
        kind = next((_KIND[c] for c in codes if c in _KIND), None)
        if kind is None:
            continue
        q = r["valueQuantity"]
        conv = units.convert_quantity(q, kind)
        if conv.value is None:
            continue
        for code in _OTHER_UNITS[kind]:
            if code == q.get("code"):
                continue
            f = units.factor(kind, code)
            new = {**q, "value": conv.value / f, "unit": code, "system": "http://unitsofmeasure.org", "code": code}
            out.append((i, new))
    return out


# ------------------------------------------------------------------------------------------ unrelated drug
UNRELATED = [
    ("amlodipine 5 mg daily", [("http://www.nlm.nih.gov/research/umls/rxnorm", "329528", "amlodipine 5 MG")],
     "Essential hypertension", False),
    ("Hydroxychloroquine 200 mg twice daily", [("http://www.whocc.no/atc", "P01BA02", "hydroxychloroquine")],
     "Cutaneous sarcoidosis (lupus pernio)", True),
    ("Adalimumab 40 mg every 2 weeks", [("http://www.whocc.no/atc", "L04AB04", "adalimumab")],
     "Crohn's disease of ileum", True),
    ("Prednisone 40 mg daily for 5 days", [("http://www.whocc.no/atc", "H02AB07", "prednisone")],
     "Asthma exacerbation", True),
]


def _dates(bundle: dict[str, Any]) -> list[datetime]:
    out = []
    for r in resources(bundle):
        if r.get("resourceType") == "Patient":
            continue
        for key in ("onsetDateTime", "effectiveDateTime", "authoredOn", "recordedDate"):
            v = r.get(key)
            if isinstance(v, str) and len(v) >= 10:
                out.append(datetime.fromisoformat(v[:10]))
        period = r.get("effectivePeriod")
        if isinstance(period, dict) and isinstance(period.get("start"), str):
            out.append(datetime.fromisoformat(period["start"][:10]))
    return out


def with_unrelated_drug(bundle: dict[str, Any], which: int) -> dict[str, Any]:
    text, codings, reason, stopped = UNRELATED[which]
    first = min(_dates(bundle), default=datetime(2021, 1, 1))
    end = first - timedelta(days=400)
    start = end - timedelta(days=5 if "5 days" in text else 700)
    patient = next(r for r in resources(bundle) if r.get("resourceType") == "Patient")
    med = {"resourceType": "MedicationStatement", "id": "unrelated-drug-1",
           "status": "completed" if stopped else "active",
           "medicationCodeableConcept": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings],
                                         "text": text},
           "subject": {"reference": f"Patient/{patient['id']}"},
           "effectivePeriod": {"start": start.date().isoformat(),
                               **({"end": end.date().isoformat()} if stopped else {})},
           "reasonCode": [{"text": reason}],
           "dosage": [{"text": text}]}
    changed = copy.deepcopy(bundle)
    changed["entry"].append({"fullUrl": f"https://fixtures.example.org/fhir/MedicationStatement/{med['id']}",
                             "resource": med})
    return changed


# ------------------------------------------------------------------------------------------ the properties
@pytest.mark.parametrize("stem", STEMS)
@PROPERTY
@given(data=st.data())
def test_decision_43_shuffled_bundle_same_answer(stem, data):
    bundle, _, _ = baseline(stem)
    order = data.draw(st.permutations(range(len(bundle["entry"]))), label="entry order")
    changed = {**bundle, "entry": [bundle["entry"][i] for i in order]}
    assert_same(stem, changed, "shuffling the Bundle")


@pytest.mark.parametrize("stem", STEMS)
@PROPERTY
@given(data=st.data())
def test_decision_43_concept_in_another_code_system_same_answer(stem, data):
    bundle, _, _ = baseline(stem)
    options = recodings(bundle)
    if not options:
        return
    i, key, concept = data.draw(st.sampled_from(options), label="recoding")
    changed = copy.deepcopy(bundle)
    changed["entry"][i]["resource"][key] = concept
    assert_same(stem, changed, f"recoding {key} of entry {i} as {concept.get('coding')}")


@pytest.mark.parametrize("stem", STEMS)
@PROPERTY
@given(data=st.data())
def test_decision_43_result_in_another_unit_same_answer(stem, data):
    bundle, _, _ = baseline(stem)
    options = unit_changes(bundle)
    if not options:
        return
    i, quantity = data.draw(st.sampled_from(options), label="unit change")
    changed = copy.deepcopy(bundle)
    changed["entry"][i]["resource"]["valueQuantity"] = quantity
    assert_same(stem, changed, f"reporting entry {i} as {quantity}")


@pytest.mark.parametrize("stem", STEMS)
@PROPERTY
@given(data=st.data())
def test_decision_43_unrelated_earlier_drug_same_answer(stem, data):
    bundle, _, _ = baseline(stem)
    which = data.draw(st.integers(0, len(UNRELATED) - 1), label="unrelated drug")
    assert_same(stem, with_unrelated_drug(bundle, which), f"adding {UNRELATED[which][0]} for {UNRELATED[which][2]}")


@pytest.mark.parametrize("stem", STEMS)
@PROPERTY
@given(data=st.data())
def test_decision_43_duplicated_resource_same_answer(stem, data):
    bundle, _, _ = baseline(stem)
    candidates = [i for i, r in enumerate(resources(bundle)) if r.get("resourceType") != "Patient" and not _is_draft(r)]
    if not candidates:
        return
    i = data.draw(st.sampled_from(candidates), label="duplicated entry")
    changed = copy.deepcopy(bundle)
    dup = copy.deepcopy(changed["entry"][i])
    dup["resource"]["id"] = f"{dup['resource']['id']}-copy"
    dup["fullUrl"] = f"{dup.get('fullUrl', '')}-copy"
    changed["entry"].append(dup)
    assert_same(stem, changed, f"duplicating {dup['resource']['resourceType']}/{dup['resource']['id']}")


def test_the_transformations_reach_every_kind_of_fixture():
    """The properties are not vacuous: most fixtures have a concept to recode and a result to convert."""
    recodable = [s for s in STEMS if recodings(load(s)[0])]
    convertible = [s for s in STEMS if unit_changes(load(s)[0])]
    assert len(recodable) >= 0.8 * len(STEMS), sorted(set(STEMS) - set(recodable))
    assert len(convertible) >= 0.8 * len(STEMS), sorted(set(STEMS) - set(convertible))
    assert math.isclose(units.factor("creatinine", "umol/L") * 88.4, 1.0)
