import json
from pathlib import Path

import pytest

from cds_service.clinical.engine import Evaluation, evaluate
from cds_service.clinical.record import PatientRecord
from tests.fhir_builders import (
    AMOXICILLIN,
    PREDNISONE,
    dosage,
    draft,
    egfr,
    ivig_order,
    med_statement,
    ns,
    ns_patient,
    record,
    weight,
)

SYNTHEA = sorted((Path(__file__).resolve().parent / "data" / "synthea-r4").glob("*.json"))


def _synthea(path: Path, drafts=()) -> PatientRecord:
    bundle = json.loads(path.read_text())
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    rec = PatientRecord(patient_id=pid)
    rec.add(bundle)
    rec.draft_orders.extend(drafts)
    return rec


def test_unrelated_order_gets_no_cards():
    ev = evaluate(ns_patient(weight(70), drafts=[draft("amox", AMOXICILLIN, dosage(500))]), "order-sign")
    assert isinstance(ev, Evaluation) and ev.cards == [] and ev.rule_ids == []
    assert ev.stage == "S1" and ev.facts.ns_status == "active"


def test_evaluation_shape():
    ev = evaluate(ns_patient(weight(70), egfr(48), drafts=[ivig_order()]), "order-select")
    assert ev.stage == "S1"
    assert ev.rule_ids == [c.extension["org.neurosarcoidosis-cds.rule-id"] for c in ev.cards]
    assert "ivig.safety.renal" in ev.rule_ids and "stage.s1-untreated" in ev.rule_ids


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.name[:20])
@pytest.mark.parametrize("hook", ["order-select", "order-sign", "patient-view"])
def test_synthea_records_evaluate_without_exceptions(path, hook):
    # an IVIG order makes the safety rules read the whole record
    ev = evaluate(_synthea(path, [ivig_order()]), hook)
    assert ev.stage == "S0"
    assert all(r.startswith("ivig.") for r in ev.rule_ids)  # no sarcoidosis: never a ladder card
    if hook == "patient-view":
        assert ev.cards == []
    elif ev.facts.age is not None and ev.facts.age < 18:  # decision 36: no adult dose card for a child
        assert not {"ivig.dose", "ivig.dose.weight-missing"} & set(ev.rule_ids)
    else:
        assert "ivig.dose.weight-missing" in ev.rule_ids  # synthea weights are years old


def test_synthea_unrelated_order_gets_nothing():
    for path in SYNTHEA:
        assert evaluate(_synthea(path, [draft("a", AMOXICILLIN, dosage(500))]), "order-sign").cards == []


JUNK = (None, 7, "x", [], {}, True, [1], {"coding": "x"}, [{"coding": [{"code": 5}]}])


def _rich_resources():
    from tests import test_rules as tr
    from tests.fhir_builders import (
        creatinine,
        height,
        icd,
        med_admin,
        obs,
    )
    return [tr.pred(), tr.relapse(), tr.mtx(), weight(110), height(165), egfr(48), creatinine(1.2),
            icd("htn", "I10"), obs("iga", "2458-8", 3, "mg/dL"), med_admin("i1", tr.INFLIXIMAB, days_ago=20),
            {"resourceType": "AllergyIntolerance", "id": "al", "code": {"text": "immune globulin"},
             "reaction": [{"manifestation": [{"text": "anaphylaxis"}]}]},
            {"resourceType": "Device", "id": "d", "type": {"text": "PICC line"}},
            {"resourceType": "Encounter", "id": "e", "status": "in-progress", "class": {"code": "IMP"},
             "reasonReference": [{"reference": "Condition/ns-1"}]}]


def test_junk_values_in_any_field_never_raise():
    """A broken resource (or draft order) must never break the request."""
    import copy

    from tests.fhir_builders import patient

    base = _rich_resources()
    drafts = [ivig_order(), draft("m", AMOXICILLIN, dosage(15))]
    for i, res in enumerate(base + drafts):
        for key in list(res):
            if key in ("resourceType",):
                continue
            for junk in JUNK:
                resources = copy.deepcopy(base)
                ds = copy.deepcopy(drafts)
                target = (resources + ds)[i]
                target[key] = junk
                rec = ns_patient(*resources, drafts=ds)
                evaluate(rec, "order-sign")
                evaluate(rec, "patient-view")
    # junk inside dosage and doseQuantity
    for junk in JUNK:
        o = ivig_order()
        o["dosageInstruction"][0]["timing"] = junk
        o2 = ivig_order()
        o2["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = junk
        o3 = ivig_order()
        o3["dosageInstruction"] = [junk]
        evaluate(ns_patient(*base, drafts=[o, o2, o3, junk]), "order-sign")
        p = patient()
        p["birthDate"] = junk
        p["gender"] = junk
        evaluate(record(p, ns(), weight(70), drafts=[ivig_order()]), "order-sign")
        ms = med_statement("j", PREDNISONE, dose={"timing": {"repeat": junk}, "doseAndRate": [{"doseQuantity": junk}],
                                                  "route": junk})
        evaluate(ns_patient(ms, drafts=[ivig_order()]), "order-sign")


def _fixture_record(extra_condition=None, drop_optional=False):
    import asyncio
    import json
    from pathlib import Path

    from cds_service.evaluate import build_request
    from cds_service.hooks import parse_call
    from cds_service.services import registry
    from cds_service.sources.gather import GatherPolicy, gather, prefetch_only

    bundle = json.loads((Path(__file__).resolve().parents[1] / "fixtures/fhir/19-ivig-renal-egfr-48.json").read_text())
    req = build_request(bundle, "order-select")
    if extra_condition:
        req["prefetch"]["conditions"]["entry"].append({"resource": extra_condition})
    if drop_optional:
        for key in ("allergies", "devices", "medicationAdministrations"):
            req["prefetch"].pop(key)
    call = parse_call(registry()["neurosarcoidosis-order-select"], req)
    policy = GatherPolicy(deadline_seconds=1)
    return asyncio.run(gather(call, prefetch_only(call), policy))


def test_one_malformed_resource_is_skipped_and_said_not_fatal():
    """A Condition the cheap checks let through but the rules trip on: the other cards still come, and the
    clinician is told what was skipped."""
    junk = {"resourceType": "Condition", "id": "junk-1", "subject": {"reference": "Patient/pt-19"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "230193008"}]},
            "clinicalStatus": {"coding": 5}}
    ev = evaluate(_fixture_record(junk), "order-select")
    assert {"ivig.safety.renal", "ivig.dose", "stage.s3r-gc-refractory"} <= set(ev.rule_ids)
    assert all("skipped Condition/junk-1: not valid FHIR R4" in c.detail for c in ev.cards)


def test_unavailable_optional_data_is_said_on_the_cards():
    ev = evaluate(_fixture_record(drop_optional=True), "order-select")
    assert ev.cards and all("prior immune globulin reactions" in c.detail for c in ev.cards)


# ----------------------------------------------------------------------------- rule groups and rules off
def _ivig_patient() -> PatientRecord:
    # untreated NS (stage card), IVIG ordered (safety and dose cards), eGFR 40 (renal card)
    return ns_patient(egfr(40), weight(70), drafts=[ivig_order()])


def test_rule_groups_choose_which_cards_can_fire():
    from cds_service.clinical.rules import RULE_BY_ID

    everything = evaluate(_ivig_patient(), "order-sign")
    groups = {RULE_BY_ID[r].group for r in everything.rule_ids}
    assert {"ladder", "ivig-safety"} <= groups
    only_safety = evaluate(_ivig_patient(), "order-sign", rule_groups={"ivig-safety"})
    assert only_safety.rule_ids and {RULE_BY_ID[r].group for r in only_safety.rule_ids} == {"ivig-safety"}
    assert sorted(only_safety.rule_ids) == sorted(r for r in everything.rule_ids
                                                  if RULE_BY_ID[r].group == "ivig-safety")
    assert evaluate(_ivig_patient(), "order-sign", rule_groups=()).cards == []


def test_a_rule_that_is_off_is_never_evaluated(monkeypatch):
    from cds_service.clinical.rules import RULE_BY_ID, registry

    calls = []
    renal = RULE_BY_ID["ivig.safety.renal"]
    spy = registry.Rule(renal.id, renal.group, renal.decision, lambda ctx: calls.append(1) or renal.check(ctx))
    monkeypatch.setattr(registry, "RULES", tuple(spy if r.id == renal.id else r for r in registry.RULES))
    on = evaluate(_ivig_patient(), "order-sign")
    assert "ivig.safety.renal" in on.rule_ids and calls == [1]
    off = evaluate(_ivig_patient(), "order-sign", rules_off={"ivig.safety.renal"})
    assert "ivig.safety.renal" not in off.rule_ids and calls == [1]
    assert set(off.rule_ids) == set(on.rule_ids) - {"ivig.safety.renal"}


def test_unknown_groups_and_rule_ids_are_refused():
    with pytest.raises(ValueError, match="unknown rule group"):
        evaluate(_ivig_patient(), "order-sign", rule_groups={"ivig"})
    with pytest.raises(ValueError, match="unknown rule id"):
        evaluate(_ivig_patient(), "order-sign", rules_off={"ivig.safety.renl"})


def test_the_registry_names_each_rule_its_group_decision_and_card_text():
    from cds_service.clinical.cards import card_library
    from cds_service.clinical.rules import GROUPS, RULE_IDS, RULES

    assert len(set(RULE_IDS)) == len(RULE_IDS) == len(RULES)
    lib = card_library()
    for rule in RULES:
        assert rule.group in GROUPS
        assert rule.decision.startswith(("decision", "A")), rule
        assert rule.card in lib, rule
