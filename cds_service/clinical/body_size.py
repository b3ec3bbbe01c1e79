"""Body size from a recorded BMI (decision 33).

When no height was measured, a BMI recorded together with a weight gives the height the adjusted dosing
weight needs: height = sqrt(weight / BMI). The pair must come from one measurement (the same day), since
a BMI from another visit describes another weight. Pure functions.
"""

from __future__ import annotations

import math
from datetime import datetime

SAME_MEASUREMENT_HOURS = 24


def height_cm_from_bmi(weight_kg: float, bmi: float) -> float | None:
    """Height in cm implied by a weight in kg and a BMI in kg/m2; None for values that cannot be a person."""
    if weight_kg <= 0 or bmi <= 0 or not math.isfinite(weight_kg) or not math.isfinite(bmi):
        return None
    height = 100 * math.sqrt(weight_kg / bmi)
    return height if 50 <= height <= 250 else None


def same_measurement(a: datetime | None, b: datetime | None) -> bool:
    """Whether a weight and a BMI were recorded at one measurement (within a day of each other)."""
    if a is None or b is None:
        return False
    return abs((a - b).total_seconds()) <= SAME_MEASUREMENT_HOURS * 3600
