"""Plausible ranges for the numbers the rules read, checked where they are read (the readers' edge).

A value outside its range is not used, and the card says so ("value not used"), the same as a value in an
unknown unit: a creatinine of 0 or a dose of 1e308 is a data-entry or interface error, never a reason to
divide by zero, overflow, or lose the patient's other cards. The ranges are wide on purpose (they catch
impossible values, not unusual ones); each is in the unit the rules use.
"""

from __future__ import annotations

import math

# kind -> (lowest plausible, highest plausible), in the kind's target unit (cds_service.clinical.units)
RANGES: dict[str, tuple[float, float]] = {
    "creatinine": (0.05, 40.0),  # mg/dL
    "egfr": (0.0, 300.0),  # mL/min/1.73 m2
    "weight": (0.3, 700.0),  # kg
    "height": (20.0, 300.0),  # cm
    "iga": (0.0, 5000.0),  # mg/dL
    "hba1c": (2.0, 25.0),  # %
    "bmi": (8.0, 150.0),  # kg/m2
    "protein": (0.0, 30.0),  # g/dL
    "viscosity": (0.5, 50.0),  # cP
    "mass_dose": (0.0, 1_000_000.0),  # mg
    "ivig_dose_g": (0.0, 1000.0),  # g per administration
    "ivig_dose_g_per_kg": (0.0, 10.0),  # g/kg per administration
}


def problem(kind: str, value: float, unit: str = "") -> str | None:
    """Why ``value`` cannot be used, or None when it is plausible (finite and inside the kind's range)."""
    low, high = RANGES[kind]
    if not math.isfinite(value) or value < low or value > high or (low == 0.0 and value <= 0 and kind in _POSITIVE):
        shown = f"{value:g} {unit}".strip()
        return f"value {shown} is outside the plausible range for {kind.replace('_', ' ')}; value not used"
    return None


_POSITIVE = frozenset({"mass_dose", "ivig_dose_g", "ivig_dose_g_per_kg"})  # a dose of 0 is no dose
