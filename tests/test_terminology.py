import json

from cds_service.clinical import immune_globulin as ig
from cds_service.clinical.terminology import (
    ANTI_TNF,
    GC,
    IG,
    build_terminology,
    get_terminology,
)
from tests.fhir_builders import ATC, ICD, LNC, RXN, SCT, cc

T = get_terminology()


def names(concept, medication=False):
    return T.match(concept, medication=medication).names


def test_value_sets_are_grouped_by_terminology_group():
    vs = T.value_sets()
    for group in ("neurosarcoidosis", "sarcoidosis-general", "glucocorticoid", "second-line", "third-line-anti-tnf",
                  "ivig", "scig", "thrombosis-risk", "renal-risk", "nephrotoxic-drug"):
        assert vs[group], group
    assert {e.code for e in vs["neurosarcoidosis"]} >= {"230193008", "D8681", "D8682"}


def test_icd_with_or_without_dot_and_families():
    assert "renal.ckd-severe" in names(cc(ICD, "N18.4"))
    assert "renal.ckd-severe" in names(cc(ICD, "N184"))
    assert "renal.diabetes" in names(cc(ICD, "E11.65"))  # E08-E13 family, code not listed itself
    assert "heart-failure" in names(cc(ICD, "I50.23"))
    assert "renal.ckd-severe" not in names(cc(ICD, "N18.3"))
    assert not names(cc(ICD, "J45.909"))  # asthma: nothing


def test_urn_oid_system_alias():
    assert "ns.specific" in names({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "D86.81"}]})


def test_atc_prefix_and_progestogen_exclusion():
    assert "estrogen-thrombosis-risk" in names(cc(ATC, "G03CA03"), True)
    assert "estrogen-thrombosis-risk" in names(cc(ATC, "G03AA07"), True)
    assert "estrogen-thrombosis-risk" not in names(cc(ATC, "G03AC01"), True)  # progestogen-only
    assert "nephrotoxic-drug" in names(cc(ATC, "M01AE01"), True)


def test_unverified_code_alone_never_fires():
    # 709489006 (SFN) is unverified in terminology.json: alone it must not count (decision 13)
    m = T.match(cc(SCT, "709489006"))
    assert "neuro.sfn" not in m.names and "neuro.sfn" in m.rejected
    # ... with a display that agrees with terminology.json, it counts
    assert "neuro.sfn" in names(cc(SCT, "709489006", "Small fiber neuropathy"))
    # ... with a verified partner code of the same value set, it counts
    both = {"coding": [{"system": SCT, "code": "29260007"}, {"system": ICD, "code": "D80.2"}]}
    assert "iga.deficiency" in names(both)
    assert "iga.deficiency" not in names(cc(SCT, "29260007"))


def test_rxnorm_product_codes_roll_up_to_ingredient():
    m = T.match(cc(RXN, "310994"), medication=True)
    assert m.drug_class == ANTI_TNF and m.ingredient.key == "infliximab"
    m = T.match(cc(RXN, "312615"), medication=True)
    assert m.drug_class == GC and m.ingredient.key == "prednisone"


def test_biosimilar_and_brand_names():
    assert T.match({"text": "infliximab-dyyb 100 MG Injection"}, medication=True).ingredient.key == "infliximab"
    assert T.match({"text": "Remicade"}, medication=True).drug_class == ANTI_TNF
    assert T.match({"text": "methylprednisolone sodium succinate"}, medication=True).ingredient.key == \
        "methylprednisolone"
    assert T.match({"text": "prednisolone 5 mg"}, medication=True).ingredient.key == "prednisolone"


def test_immune_globulin_by_name_brand_atc_and_hyperimmune_excluded():
    for text in ("Immune globulin (human) 10% IV", "IVIG", "Privigen 20 g", "Gammagard Liquid", "IGIV"):
        assert T.match({"text": text}, medication=True).drug_class == IG, text
    assert T.match(cc(ATC, "J06BA02"), medication=True).drug_class == IG
    assert T.match({"text": "hepatitis B immune globulin"}, medication=True).drug_class is None
    assert T.match({"text": "Rho(D) immune globulin"}, medication=True).drug_class is None


def test_ivig_vs_scig():
    # route of an immune globulin record: decision 36, tests/test_real_records_ivig.py
    assert ig.administration_kind("Hizentra 4 g", None)[0] == "scig"
    assert ig.administration_kind("Gammagard Liquid", "sc")[0] == "scig"
    assert ig.administration_kind("Gammagard Liquid", "iv")[0] == "ivig"
    assert ig.administration_kind("immune globulin", None, ["J06BA01"])[0] == "scig"
    assert ig.administration_kind("immune globulin", None) == ("ivig", True)  # assumed IV (safe side)


def test_loinc_codes_are_loaded():
    assert "lab-renal" in names(cc(LNC, "2160-0"))


def test_site_extra_codes_without_editing_python(tmp_path, monkeypatch):
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "codes:\n"
        "  - {group: renal.dialysis, system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'Z49.01', display: dial}\n"
        "  - {group: lab.anti-iga, system: 'http://loinc.org', code: '99999-9', display: local anti-IgA}\n"
        "ivig_rxnorm: ['1234567']\n")
    t = build_terminology(str(extra))
    assert "renal.dialysis" in t.match(cc(ICD, "Z49.01")).names
    m = t.match(cc(RXN, "1234567"), medication=True)
    assert m.drug_class == IG
    # JSON works too, and the default instance is untouched
    ej = tmp_path / "extra.json"
    ej.write_text(json.dumps([{"group": "heart-failure", "system": "http://snomed.info/sct", "code": "1111"}]))
    assert "heart-failure" in build_terminology(str(ej)).match(cc(SCT, "1111")).names
    assert "renal.dialysis" not in T.match(cc(ICD, "Z49.01")).names


# --------------------------------------------------------------------------- memoised matching
def test_memoised_match_tells_json_types_apart_and_equals_a_fresh_match():
    from cds_service.clinical.terminology import concept_key

    t = build_terminology()
    concepts = [cc(ICD, "N18.4"), cc(SCT, "709489006"), cc(SCT, "709489006", "Small fiber neuropathy"),
                {"coding": [{"system": RXN, "code": 1}]}, {"coding": [{"system": RXN, "code": True}]},
                {"coding": [{"system": RXN, "code": "1"}]}, {"text": "prednisone 20 mg"}, {"text": "Hizentra"},
                {"coding": {"system": ICD, "code": "N18.4"}}, {}]
    assert len({concept_key(c) for c in concepts[3:6]}) == 3  # 1, true and "1" are different keys
    for medication in (False, True):
        for c in concepts * 2:  # the second pass answers from the memo
            assert t.match(c, medication=medication) == t._match(c, medication)


def test_memo_belongs_to_its_registry_and_site_codes_change_answers(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("ivig_rxnorm: ['7654321']\n")
    concept = cc(RXN, "7654321")
    plain = build_terminology()
    assert plain.match(concept, medication=True).drug_class is None  # memoised: not IVIG here
    site = build_terminology(str(extra))
    assert site.match(concept, medication=True).drug_class == IG  # another registry, its own memo
    plain.add_ivig_rxnorm("7654321")  # a changed registry forgets what it matched
    assert plain.match(concept, medication=True).drug_class == IG


def test_memos_are_bounded(monkeypatch):
    from cds_service.clinical import terminology

    monkeypatch.setattr(terminology, "MEMO_MAX_ENTRIES", 50)
    t = build_terminology()
    for i in range(500):
        t.match(cc(ICD, f"Z{i:04d}"))
        terminology.ingredient_from_text(f"drug{i} tablet")
    assert len(t._match_memo) <= 50
    info = terminology._ingredient_from_text.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize
    huge = {"text": "prednisone " + "x" * 5000}
    assert t.match(huge, medication=True).ingredient.key == "prednisone"
    assert terminology.concept_key(huge) is None  # too large to remember
    before = terminology._ingredient_from_text.cache_info().currsize
    assert terminology.ingredient_from_text(huge["text"]).key == "prednisone"  # read, never kept
    assert terminology._ingredient_from_text.cache_info().currsize == before


def test_concept_match_results_are_frozen():
    import dataclasses

    import pytest

    with pytest.raises(dataclasses.FrozenInstanceError):
        T.match(cc(ICD, "N18.4")).names = frozenset()
