import pytest

from cds_service.clinical import units


@pytest.mark.parametrize(("value", "code", "kind", "expected"), [
    (106.08, "umol/L", "creatinine", 1.2),
    (1.2, "mg/dL", "creatinine", 1.2),
    (176.4, "[lb_av]", "weight", 80.01),
    (80000, "g", "weight", 80.0),
    (66, "[in_i]", "height", 167.64),
    (1.7, "m", "height", 170.0),
    (0.05, "g/L", "iga", 5.0),
    (48, "mL/min/{1.73_m2}", "egfr", 48.0),
    (48, "mL/min/1.73m2", "egfr", 48.0),
])
def test_conversions(value, code, kind, expected):
    c = units.convert(value, code, kind)
    assert c.problem is None
    assert c.value == pytest.approx(expected, abs=0.01)


def test_unknown_unit_is_not_used_and_reported():
    c = units.convert(1.4, "mmol/dL", "creatinine")
    assert c.value is None
    assert "unknown unit" in c.problem and "not used" in c.problem


def test_quantity_without_code_accepts_an_unambiguous_unit_text():
    """Decision 32: a unit text that can mean one thing only is read, and shown as written."""
    assert units.convert_quantity({"value": 70, "unit": "kg"}, "weight").value == 70
    kilos = units.convert_quantity({"value": 70, "unit": "kilos"}, "weight")
    assert kilos.value == 70 and kilos.original == "70 kilos"
    assert units.convert_quantity({"value": 70, "unit": "units"}, "weight").value is None


def test_non_numeric_value():
    assert units.convert("70", "kg", "weight").value is None


def test_memoised_conversion_keeps_types_and_signs_apart():
    a = units.convert_quantity({"value": 1, "code": "mg/dL"}, "creatinine")
    b = units.convert_quantity({"value": 1.0, "code": "mg/dL"}, "creatinine")
    assert (a.original, b.original) == ("1 mg/dL", "1.0 mg/dL")
    assert units.convert_quantity({"value": True, "code": "mg/dL"}, "creatinine").value is None
    assert units.convert_quantity({"value": 0.0, "code": "kg"}, "weight").original == "0.0 kg"
    assert units.convert_quantity({"value": -0.0, "code": "kg"}, "weight").original == "-0.0 kg"
    assert units.convert_quantity({"value": 88.4, "code": "umol/L"}, "creatinine") == \
        units.convert_quantity({"value": 88.4, "code": "umol/L"}, "creatinine")
