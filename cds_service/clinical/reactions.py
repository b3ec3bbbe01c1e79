"""How serious an earlier reaction to immune globulin was (decision 37).

A serious reaction (anaphylaxis, a fall in blood pressure, angioedema, bronchospasm) makes the IgA card
critical; a mild one (headache, chills, fever) is listed on the warning card. The words are data, in
``cds_service/clinical/criteria/immune_globulin.yaml`` (``severe_reaction``, ``mild_reaction``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from .immune_globulin import criteria

SEVERE, MILD, UNKNOWN = "severe", "mild", "unknown"


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    doc = criteria()
    severe = re.compile("|".join(f"(?:{w})" for w in doc["severe_reaction"]), re.IGNORECASE)
    mild = re.compile("|".join(f"(?:{w})" for w in doc["mild_reaction"]), re.IGNORECASE)
    return severe, mild


def reaction_severity(texts: Iterable[str], recorded_severity: str | None = None,
                      criticality: str | None = None) -> str:
    """``severe``, ``mild`` or ``unknown`` for one recorded reaction.

    Severe: a serious manifestation named, or the reaction recorded as ``severe``. Mild: only milder
    manifestations named. With no manifestation at all, an allergy of high criticality counts as severe
    (whoever recorded it judged it dangerous); otherwise the severity is unknown and the card says so.
    """
    severe, mild = _patterns()
    words = [t for t in texts if isinstance(t, str) and t.strip()]
    if any(severe.search(t) for t in words) or (recorded_severity or "").lower() == "severe":
        return SEVERE
    if any(mild.search(t) for t in words):
        return MILD
    if (criticality or "").lower() == "high":
        return SEVERE
    return UNKNOWN
