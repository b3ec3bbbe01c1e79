"""``cds-service evaluate``: a bundle's cards in the terminal, --json, and a folder of fixtures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cds_service.cli import app
from cds_service.models import RULE_ID_EXTENSION, Action, Card, Link, OverrideReason, Source, Suggestion, WireCard

runner = CliRunner()
SUBJECT = {"reference": "Patient/p1"}


def bundle(order_text: str = "immune globulin", status: str = "draft") -> dict:
    return {
        "resourceType": "Bundle", "type": "collection", "timestamp": "2026-11-25T09:00:00Z",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"}},
            {"resource": {"resourceType": "MedicationRequest", "id": "ivig-1", "status": status, "intent": "order",
                          "subject": SUBJECT, "medicationCodeableConcept": {"text": order_text}}},
            {"resource": {"resourceType": "MedicationRequest", "id": "mtx-1", "status": status, "intent": "order",
                          "subject": SUBJECT, "medicationCodeableConcept": {"text": "methotrexate"}}},
        ],
    }


CARDS = [
    Card(summary="Immune globulin dose: 2 g/kg = 148 g", indicator="info", detail="Weight **74 kg**.",
         source=Source(label="Neurosarcoidosis CDS"), extension={RULE_ID_EXTENSION: "ivig.dose"}),
    Card(summary="IVIG in haemodialysis [red]: high risk of kidney injury[/]", indicator="critical",
         detail="eGFR **8** mL/min/1.73 m².", source=Source(label="FDA label", url="https://example.org/label"),
         links=[Link(label="Label", url="https://example.org/label")],
         suggestions=[Suggestion(label="Cancel the IVIG order", isRecommended=True,
                                 actions=[Action(type="delete", description="Remove the draft IVIG order",
                                                 resourceId="MedicationRequest/ivig-1")])],
         selectionBehavior="at-most-one",
         overrideReasons=[OverrideReason(code="benefit", system="https://example.org/o",
                                         display="Benefit outweighs risk")],
         extension={RULE_ID_EXTENSION: "ivig.safety.renal"}),
]


@pytest.fixture
def seen(monkeypatch):
    """A stand-in engine answering CARDS for immune globulin orders and nothing otherwise."""
    from cds_service.clinical import engine

    calls = []

    class Result:
        def __init__(self, cards):
            self.wire_cards = [WireCard.of(c) for c in cards]

    def evaluate(record, hook, **_):
        calls.append({"hook": hook, "selections": list(record.selections)})
        texts = json.dumps(record.draft_orders)
        return Result(list(CARDS) if "immune globulin" in texts else [])

    monkeypatch.setattr(engine, "evaluate", evaluate)
    return calls


def write(path, data) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_single_bundle_prints_cards_like_a_sidebar(tmp_path, seen):
    result = runner.invoke(app, ["evaluate", write(tmp_path / "ivig.json", bundle())])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ivig.json (order-select): 2 cards (1 critical, 1 info)" in out
    # critical first, even though the engine listed it second
    assert out.index("CRITICAL") < out.index("INFO")
    # card text is printed literally: Rich markup in a summary is not interpreted
    assert "[red]: high risk of kidney injury[/]" in out
    assert "Cancel the IVIG order" in out and "(recommended)" in out and "choose at most one" in out
    assert "delete: Remove the draft IVIG order" in out
    assert "Override reasons: Benefit outweighs risk" in out
    assert "https://example.org/label" in out and "ivig.safety.renal" in out
    assert "74 kg" in out  # Markdown detail rendered
    assert seen == [{"hook": "order-select", "selections": ["MedicationRequest/ivig-1", "MedicationRequest/mtx-1"]}]


def test_hook_and_order_options(tmp_path, seen):
    path = write(tmp_path / "b.json", bundle())
    assert runner.invoke(app, ["evaluate", path, "--hook", "order-sign"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", path, "--order", "MedicationRequest/mtx-1"]).exit_code == 0
    assert seen[0]["hook"] == "order-sign"
    assert seen[1]["selections"] == ["MedicationRequest/mtx-1"]


def test_no_cards_says_so(tmp_path, seen):
    result = runner.invoke(app, ["evaluate", write(tmp_path / "abx.json", bundle("amoxicillin"))])
    assert result.exit_code == 0
    assert "abx.json (order-select): no cards" in result.output


def test_json_prints_the_cds_hooks_response(tmp_path, seen):
    result = runner.invoke(app, ["evaluate", write(tmp_path / "ivig.json", bundle()), "--json"])
    assert result.exit_code == 0, result.output
    response = json.loads(result.output)
    assert set(response) == {"cards"}
    assert [c["extension"][RULE_ID_EXTENSION] for c in response["cards"]] == ["ivig.dose", "ivig.safety.renal"]
    assert all("detail_html" not in c for c in response["cards"])


def _fixture_tree(tmp_path):
    (tmp_path / "fhir").mkdir()
    (tmp_path / "expected").mkdir()
    write(tmp_path / "fhir" / "01-ivig.json", bundle())
    write(tmp_path / "fhir" / "02-abx.json", bundle("amoxicillin"))
    write(tmp_path / "fhir" / "03-wrong.json", bundle())
    (tmp_path / "expected" / "01-ivig.yaml").write_text(
        "hook: order-sign\norder: MedicationRequest/ivig-1\ncards:\n"
        "  - rule: ivig.safety.renal\n    indicator: critical\n  - rule: ivig.dose\n    indicator: info\n")
    (tmp_path / "expected" / "02-abx.yaml").write_text("cards: []\n")
    (tmp_path / "expected" / "03-wrong.yaml").write_text(
        "cards:\n  - rule: ivig.safety.renal\n    indicator: warning\n  - rule: stage.s1-untreated\n"
        "    indicator: warning\n")
    return tmp_path / "fhir"


def test_folder_prints_one_line_per_bundle_checked_against_expectations(tmp_path, seen):
    result = runner.invoke(app, ["evaluate", str(_fixture_tree(tmp_path))])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("01-ivig.json: 1 critical 0 warning 1 info — ivig.safety.renal, ivig.dose")
    assert lines[0].endswith("✓ as expected")
    assert lines[1] == "02-abx.json: 0 critical 0 warning 0 info — no cards  ✓ as expected"
    assert "✗ missing ivig.safety.renal (warning), stage.s1-untreated (warning)" in lines[2]
    assert "unexpected ivig.dose (info), ivig.safety.renal (critical)" in lines[2]
    # each fixture was placed with its own hook and order
    assert seen[0] == {"hook": "order-sign", "selections": []}
    assert seen[1]["hook"] == "order-select"


def test_folder_json_is_one_array(tmp_path, seen):
    result = runner.invoke(app, ["evaluate", str(_fixture_tree(tmp_path)), "--json"])
    assert result.exit_code == 0
    out = json.loads(result.output)
    assert [(o["bundle"], o["hook"], len(o["response"]["cards"])) for o in out] == [
        ("01-ivig.json", "order-sign", 2), ("02-abx.json", "order-select", 0), ("03-wrong.json", "order-select", 2)]


def test_bad_bundles_are_reported_and_the_rest_still_run(tmp_path, seen):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write(folder / "a-good.json", bundle())
    broken = bundle()
    broken["entry"][1]["resource"]["authoredOn"] = "yesterday"
    write(folder / "b-invalid.json", broken)
    (folder / "c-not-json.json").write_text("{", encoding="utf-8")
    write(folder / "d-no-draft.json", bundle(status="active"))
    result = runner.invoke(app, ["evaluate", str(folder)])
    assert result.exit_code == 1
    out = result.output
    assert "a-good.json: 1 critical" in out
    assert "b-invalid.json: Bundle.entry[1].resource (MedicationRequest/ivig-1) is not valid FHIR R4" in out
    assert "c-not-json.json:" in out
    assert "d-no-draft.json: The bundle holds no draft order" in out


def test_empty_folder_and_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no *.json bundles" in result.output
    assert runner.invoke(app, ["evaluate", str(tmp_path / "missing.json")]).exit_code == 2


def test_packaged_fixtures_all_run(seen):
    """The shipped fixtures folder evaluates without a bundle error (cards depend on the engine)."""
    from cds_service.preview.fixtures import fixtures_dir

    folder = fixtures_dir("fhir")
    if not any(folder.glob("*.json")):
        pytest.skip("no packaged fixtures")
    result = runner.invoke(app, ["evaluate", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == len(list(folder.glob("*.json")))
