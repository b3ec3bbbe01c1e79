"""Every card the engine can produce meets decisions 16-18, and every rule id has reviewed text."""

import re
from pathlib import Path

import pytest

from cds_service import models
from cds_service.clinical.cards import card_library, fit_summary, md_escape, render
from cds_service.clinical.engine import evaluate
from cds_service.clinical.facts import FactRef, build_facts
from cds_service.clinical.resources import data_path
from cds_service.clinical.rules import RULE_IDS, Fired
from cds_service.clinical.thresholds import Thresholds, markdown_table
from tests import test_rules as tr
from tests.fhir_builders import (
    IVIG,
    SCT,
    cc,
    condition,
    creatinine,
    egfr,
    height,
    icd,
    ivig_order,
    med_admin,
    ns,
    obs,
    patient,
    record,
    weight,
)

TH = Thresholds()


def _scenarios():
    """Records that together fire every rule id."""
    allergy = {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": "Patient/p1"},
               "code": {"text": "immune globulin"}, "criticality": "high"}
    yield "s3r-everything", tr.ns_patient(
        tr.pred(), tr.relapse(), weight(110), height(165), egfr(48), icd("htn", "I10"), icd("pe", "Z86.711"),
        icd("mgus", "D47.2"), icd("hf", "I50.9"), obs("iga", "2458-8", 3, "mg/dL", days_ago=100),
        icd("tb", "Z22.7"), icd("mmn", "G61.82"), condition("sfn", cc(SCT, "709489006", "Small fiber neuropathy")),
        age=70, drafts=[ivig_order(g_per_day=110, days=2)])
    yield "reaction", record(patient(), allergy, weight(70), creatinine(0.8, days_ago=200), drafts=[ivig_order()])
    yield "weight-missing", record(patient(), drafts=[ivig_order()])
    yield "decomp", tr.ns_patient(tr.pred(start=60), med_admin("pulse", cc(None, None, None, "methylprednisolone IV"),
                                                               days_ago=5, dose_mg=1000), weight(70),
                                  drafts=[ivig_order(), tr.draft("cyc", tr.CYCLOPHOSPHAMIDE, tr.dosage(1000))])
    for stage_rec in (tr.ns_patient(drafts=[ivig_order()]),
                      tr.ns_patient(tr.pred(start=5), drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(mg=10, start=5), drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(status="stopped", end_days=30, status_reason="steroid psychosis"),
                                    drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=56), tr.mtx(start=56), drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=300), tr.mtx(), tr.relapse(10), weight(70), drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=300), tr.mtx(), med_admin("i1", tr.INFLIXIMAB, days_ago=20),
                                    drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=400), tr.mtx(start=350),
                                    *[med_admin(f"i{n}", tr.INFLIXIMAB, days_ago=d) for n, d in
                                      enumerate((200, 186, 158, 116, 74, 32))], tr.relapse(10),
                                    drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=300), tr.mtx(start=200), tr.relapse(10), icd("tb", "Z22.7"),
                                    drafts=[tr.PRED_ORDER]),
                      tr.ns_patient(tr.pred(start=300), tr.mtx(start=200), tr.relapse(10), icd("tb", "Z22.7"),
                                    drafts=[tr.IFX_ORDER]),
                      tr.ns_patient(drafts=[tr.draft("m", tr.METHOTREXATE, tr.dosage(15, period_unit="wk"))]),
                      tr.ns_patient(drafts=[tr.PRED_ORDER, tr.draft("m", tr.METHOTREXATE, tr.dosage(15))])):
        yield "stage", stage_rec


ALL = [(name, evaluate(rec, "order-sign")) for name, rec in _scenarios()]
ALL_CARDS = [(name, c) for name, ev in ALL for c in ev.cards]


def test_every_rule_id_is_exercised_and_has_text():
    fired = {c.extension[models.RULE_ID_EXTENSION] for _, c in ALL_CARDS}
    assert set(RULE_IDS) == fired
    lib = card_library()
    for rid in RULE_IDS:
        assert rid in lib, rid


@pytest.mark.parametrize(("name", "card"), ALL_CARDS, ids=lambda x: x if isinstance(x, str) else
                         x.extension[models.RULE_ID_EXTENSION])
def test_card_meets_decisions_16_17(name, card):
    models.Card.model_validate(models.dump(card))  # round-trips as a spec card
    assert 0 < len(card.summary) < 140
    assert "{" not in card.summary and "{" not in (card.detail or "")
    assert card.source.label and card.source.url.startswith("https://")
    ext = card.extension
    assert ext[models.RULE_ID_EXTENSION] in RULE_IDS
    level = ext[models.EVIDENCE_EXTENSION]["level"]
    assert level and level in card.detail
    if card.indicator in ("warning", "critical"):
        assert card.overrideReasons and all(r.display for r in card.overrideReasons)
    for fact in ext[models.FACTS_EXTENSION]:
        if fact.get("reference"):
            assert re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9\-.]+", fact["reference"])
            assert fact["reference"] in card.detail
    assert card.uuid
    if card.suggestions:
        assert card.selectionBehavior == "any"
        for s in card.suggestions:
            assert s.uuid and len(s.actions) == 1 and s.actions[0].type == "create"
            res = s.actions[0].resource
            assert res["status"] == "draft" and res["subject"]["reference"] == "Patient/p1"
            concept = res.get("medicationCodeableConcept") or res["code"]
            systems = {cd["system"] for cd in concept["coding"]}
            assert systems & {"http://www.nlm.nih.gov/research/umls/rxnorm", "http://loinc.org",
                              "http://www.whocc.no/atc"}


def test_indication_cards_are_info_and_say_may_be_considered():
    for _, c in ALL_CARDS:
        if c.extension[models.RULE_ID_EXTENSION].startswith("ivig.indication."):
            assert c.indicator == "info" and "may be considered" in c.summary


def test_cards_sorted_critical_warning_info():
    for _, ev in ALL:
        ranks = [models.INDICATOR_RANK[c.indicator] for c in ev.cards]
        assert ranks == sorted(ranks)


def test_summary_shortening_keeps_under_140():
    long_list = [f"risk factor number {i}" for i in range(20)]
    s = fit_summary("IVIG thrombosis risk: {factor_list}; minimum rate", {"factor_list": long_list}, TH)
    assert len(s) < 140 and "more" in s


def test_fact_text_from_the_record_is_escaped():
    assert md_escape("<script>*x*</script>") == "\\<script>\\*x\\*\\</script>"
    f = build_facts(record(patient(), ns()))
    card = render(Fired("stage.s1-untreated", facts=[FactRef("x", "[link](javascript:alert(1))", "Condition/a")],
                        values={"prednisone_mg": "20", "prior_note": ""}), f, TH)
    assert "[link]" not in card.detail


def test_thresholds_doc_is_current():
    doc = Path(__file__).resolve().parents[1] / "docs" / "thresholds.md"
    assert doc.read_text() == markdown_table()


def test_card_texts_come_from_the_cards_folder():
    assert (data_path("cards") / "stages.yaml").is_file()


def test_ivig_suggestion_uses_site_rxnorm_when_configured(tmp_path, monkeypatch):
    from cds_service.clinical import terminology

    extra = tmp_path / "x.yaml"
    extra.write_text("ivig_rxnorm: ['999001']\n")
    monkeypatch.setattr(terminology, "get_terminology", lambda: terminology.build_terminology(str(extra)))
    import cds_service.clinical.cards as cards_mod

    monkeypatch.setattr(cards_mod, "get_terminology", lambda: terminology.build_terminology(str(extra)))
    ev = evaluate(tr.ns_patient(tr.pred(), tr.relapse(), weight(70), drafts=[tr.PRED_ORDER]), "order-select")
    c = [c for c in ev.cards if c.extension[models.RULE_ID_EXTENSION] == "ivig.indication.steroid-resistant"][0]
    codes = [cd["code"] for cd in c.suggestions[0].actions[0].resource["medicationCodeableConcept"]["coding"]]
    assert codes == ["999001", "J06BA02"]
    assert IVIG  # builder constant used by the scenarios


def test_markdown_escape_and_card_uuids():
    import time
    import uuid

    from cds_service.models import new_uuid

    assert md_escape("a_b [x](y) <b>\nnext") == "a_b \\[x\\](y) \\<b> next"  # intraword _ cannot emphasise
    assert md_escape("plain text") == "plain text"
    assert md_escape(12.5) == "12.5"
    before = time.time_ns() // 1_000_000
    ids = [new_uuid() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for s in ids[:200]:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after  # the first 48 bits are the issue time in ms


def test_card_uuids_issued_later_sort_later():
    """Time-ordered keys keep audit inserts at the end of the index (models.new_uuid)."""
    import time

    from cds_service.models import new_uuid

    first = new_uuid()
    time.sleep(0.003)
    assert new_uuid() > first


def _sentences(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _sentences(value)
    elif isinstance(node, list):
        for value in node:
            yield from _sentences(value)


def test_phrases_show_as_written():
    """A rule's sentence is inserted into its card as literal text, so Markdown in it would reach the
    clinician as stray asterisks or backslashes: every sentence must read the same once escaped."""
    from cds_service.clinical.markup import text

    for sentence in _sentences(card_library()["_phrases"]):
        plain = re.sub(r"\{[a-z_]+\}", "x", sentence).replace("\n", " ")
        assert text(plain) == plain, sentence


def test_failure_card_offers_a_listed_override_reason():
    """The card that says the rules could not run offers one override reason, a code the cards' override
    code system lists (cards/_common.yaml), so feedback on it is read like any other card's."""
    from cds_service.response import evaluation_failed_card

    reasons = card_library()["_override_reasons"]
    listed = {(reasons["system"], r["code"]) for codes in reasons["sets"].values() for r in codes}
    offered = evaluation_failed_card().overrideReasons
    assert [r["code"] for r in offered] == ["acknowledged"]
    assert {(r["system"], r["code"]) for r in offered} <= listed
