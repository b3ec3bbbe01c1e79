"""The timeline without a browser or an EHR: the longitudinal fixtures through the engine's readers, the
drawing (escaped, deterministic, labelled), the card focus, the scopes read."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from cds_service.clinical.record import PatientRecord
from cds_service.evaluate import evaluate_bundle
from cds_service.models import RULE_ID_EXTENSION
from cds_service.timeline.drawing import draw
from cds_service.timeline.focus import focus_for
from cds_service.timeline.model import Lane, Marker, Point, Segment, Series, Timeline
from cds_service.timeline.normalise import build_timeline
from cds_service.timeline.page import STYLE_HASH, csp, timeline_page
from cds_service.timeline.reading import granted_types
from cds_service.timeline.service import known_rules
from tests.conftest import FIXTURES, load_json

LONGITUDINAL = FIXTURES / "longitudinal"
TODAY = date(2026, 11, 25)


def record_of(num: int) -> PatientRecord:
    path = next((LONGITUDINAL / "fhir").glob(f"{num}-*.json"))
    rec = PatientRecord(patient_id=f"pt-{num}")
    for entry in load_json(path)["entry"]:
        if entry["resource"].get("status") != "draft":  # what the EHR's FHIR server holds
            rec.add(entry["resource"])
    return rec


def lane(t: Timeline, key: str) -> Lane:
    return next(ln for ln in t.lanes if ln.key == key)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.mark.parametrize("path", sorted((LONGITUDINAL / "fhir").glob("*.json")), ids=lambda p: p.stem)
def test_longitudinal_fixture_gives_its_documented_cards(path: Path):
    expected = yaml.safe_load((LONGITUDINAL / "expected" / f"{path.stem}.yaml").read_text())
    _, response = evaluate_bundle(load_json(path), expected["hook"], expected["order"])
    got = sorted((c["extension"][RULE_ID_EXTENSION], c["indicator"]) for c in response["cards"])
    assert got == sorted((c["rule"], c["indicator"]) for c in expected["cards"])
    assert f"`{path.stem}`" in (LONGITUDINAL / "README.md").read_text()


def test_longitudinal_fixtures_span_years_with_tapers_infusions_relapses_and_ivig():
    for num in (101, 102, 103):
        t = build_timeline(record_of(num), today=TODAY)
        assert (TODAY - t.start).days > 3 * 365, num
        assert sum(1 for m in t.markers if m.kind == "relapse") >= 1, num
        assert any(s.infusion for ln in t.lanes for s in ln.segments), num
        gc = [s.amount for s in sorted(lane(t, "glucocorticoid").segments, key=lambda s: s.start) if not s.infusion]
        assert any(a > b for a, b in zip(gc, gc[1:], strict=False)), f"{num}: no taper"
    assert build_timeline(record_of(102), today=TODAY).courses


def test_taper_steps_doses_and_stop_reasons_come_from_the_readers():
    t = build_timeline(record_of(101), today=TODAY)
    first = [s for s in lane(t, "glucocorticoid").segments if s.reference and "pred-a" in s.reference]
    assert [s.amount for s in sorted(first, key=lambda s: s.start)] == [60, 40, 20, 10, 5]
    assert first[0].dose == "60 mg/day prednisone-eq."
    pulses = [s for s in lane(t, "glucocorticoid").segments if s.infusion]
    assert len(pulses) == 3 and all("IV pulse" in s.dose for s in pulses)
    mtx = lane(t, "second-line").segments
    assert len(mtx) == 1 and mtx[0].stop_reason == "intolerance" and mtx[0].dose == "15 mg/week"
    assert mtx[0].stop_text == "Hepatotoxicity: ALT five times the upper limit of normal"
    infusions = [s for s in lane(t, "anti-tnf").segments if s.infusion]
    assert len(infusions) == 22
    ongoing = [s for s in lane(t, "anti-tnf").segments if not s.infusion]
    assert ongoing and ongoing[0].ongoing
    assert [m.kind for m in t.markers].count("relapse") == 3
    assert [m.when for m in t.markers if m.kind == "manifestation"] == [date(2020, 9, 14)]


def test_ivig_courses_with_creatinine_before_and_after():
    t = build_timeline(record_of(102), today=TODAY)
    assert [(c.start, c.end, c.infusions) for c in t.courses] == [
        (date(2023, 2, 6), date(2023, 2, 10), 5), (date(2023, 6, 5), date(2023, 6, 9), 5),
        (date(2023, 10, 2), date(2023, 10, 6), 5), (date(2024, 5, 6), date(2024, 5, 10), 5)]
    third = t.courses[2]
    assert third.creatinine_before.value == pytest.approx(1.15) and third.creatinine_after.value == pytest.approx(1.9)
    assert "KDIGO" in third.rise
    assert all("KDIGO" not in c.rise for c in (t.courses[0], t.courses[1], t.courses[3]))
    egfr = next(s for s in t.series if s.key == "egfr")
    assert [th.value for th in egfr.thresholds] == [60, 30]  # egfr_warning, egfr_critical
    assert min(p.value for p in egfr.points) == 37


def test_weight_threshold_is_bmi_30_at_the_recorded_height():
    t = build_timeline(record_of(103), today=TODAY)
    weight = next(s for s in t.series if s.key == "weight")
    assert weight.thresholds and weight.thresholds[0].value == pytest.approx(30 * 1.78 ** 2, abs=0.1)
    assert max(p.value for p in weight.points) == 101


def test_units_are_converted_by_the_reader():
    rec = PatientRecord(patient_id="p")
    rec.add({"resourceType": "Patient", "id": "p", "gender": "male", "birthDate": "1960-01-01"})
    rec.add({"resourceType": "Observation", "id": "c1", "status": "final", "subject": {"reference": "Patient/p"},
             "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
             "effectiveDateTime": "2025-01-01T08:00:00Z",
             "valueQuantity": {"value": 106, "unit": "umol/L", "system": "http://unitsofmeasure.org",
                               "code": "umol/L"}})
    t = build_timeline(rec, today=TODAY)
    creat = next(s for s in t.series if s.key == "creatinine")
    assert creat.points[0].value == pytest.approx(1.2, abs=0.01) and "recorded 106 umol/L" in creat.points[0].shown
    egfr = next(s for s in t.series if s.key == "egfr")
    assert egfr.points and "computed from creatinine" in egfr.points[0].shown  # none recorded: the rules' own


def test_undated_records_are_counted_not_drawn():
    rec = PatientRecord(patient_id="p")
    rec.add({"resourceType": "MedicationStatement", "id": "m", "status": "active",
             "subject": {"reference": "Patient/p"},
             "medicationCodeableConcept": {"text": "Methotrexate 2.5 mg oral tablet"}})
    t = build_timeline(rec, today=TODAY)
    assert "1 medication records have no date and are not drawn." in t.notes


# ------------------------------------------------------------------------------------------------ drawing
def hostile() -> Timeline:
    evil = '<script>alert("x")</script> & "quotes"'
    return Timeline(start=date(2024, 1, 1), end=date(2026, 1, 1), today=date(2025, 6, 1),
                    lanes=[Lane("glucocorticoid", "Glucocorticoids",
                                [Segment(date(2024, 2, 1), date(2024, 9, 1), evil, evil, 40, stop_reason="other",
                                         stop_text=evil, reference="MedicationStatement/<x>")])],
                    markers=[Marker(date(2024, 3, 1), "relapse", evil)],
                    series=[Series("creatinine", "Creatinine", "mg/dL", [Point(date(2024, 4, 1), 1.0, evil)])],
                    notes=[evil])


def test_record_text_is_escaped_everywhere():
    html = timeline_page(hostile(), banner='Patient: <img src=x onerror="alert(1)">')
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_drawing_is_deterministic_and_labelled():
    svg = draw(hostile())
    assert svg == draw(hostile())
    assert 'role="img"' in svg and 'aria-labelledby="timeline-title timeline-desc"' in svg
    assert "<desc id=\"timeline-desc\">" in svg and "style=" not in svg  # no inline style: the CSP stays strict
    for group in ("marker", "course", "point"):
        assert f'<g class="{group}"><title>' in svg


def test_the_page_style_is_the_one_the_csp_allows():
    import base64
    import hashlib
    import re

    html = timeline_page(hostile())
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert "sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() == STYLE_HASH
    assert f"style-src '{STYLE_HASH}'" in csp(["https://ehr.example.org"])
    assert "frame-ancestors https://ehr.example.org" in csp(["https://ehr.example.org"])
    assert "frame-ancestors 'none'" in csp([])


# ------------------------------------------------------------------------------------------------ focus, scopes
def test_app_context_is_used_only_when_it_names_a_known_rule():
    rules = known_rules()
    renal = focus_for("ivig.safety.renal", rules)
    assert renal is not None and "creatinine" in renal.sections and "egfr" in renal.sections
    assert focus_for("rule=stage.s5-second-line-refractory", rules).sections[0] == "events"
    for bad in (None, "", "ivig.safety.unknown", "<script>", "x" * 500, '{"rule": "ivig.safety.renal"}'):
        assert focus_for(bad, rules) is None


@pytest.mark.parametrize("scope, types", [
    ("launch patient/Observation.rs patient/Condition.read", {"Observation", "Condition"}),
    ("launch patient/*.rs", {"*"}),
    ("launch patient/Observation.cud user/Patient.r", {"Patient"}),
    ("", None),
])
def test_granted_scopes(scope, types):
    assert granted_types(scope) == types
