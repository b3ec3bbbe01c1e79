"""Reader of AllergyIntolerance records, and prior reactions to immune globulin (IVIG safety: prior
reaction, IgA deficiency with anaphylaxis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..reactions import SEVERE, reaction_severity
from ..record import PatientRecord
from ..terminology import IG, Terminology, concept_label, concept_text
from ..thresholds import Thresholds
from .fhir import code_of, listify, ref_of
from .model import FactRef
from .validation import Validator


@dataclass
class AllergiesPart:
    ig_reactions: list[tuple[FactRef, str]] = field(default_factory=list)  # (fact, severe | mild | unknown)
    drug_allergies: dict[str, list[FactRef]] = field(default_factory=dict)  # ingredient -> allergy refs
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def anaphylaxis_after_ig(anaphylaxis: list[tuple[datetime | None, FactRef]],
                         ig_starts: list[datetime]) -> list[FactRef]:
    """Anaphylaxis Conditions dated on or after the first immune globulin (or undated, once IG was given)."""
    if not ig_starts:
        return []
    first = min(ig_starts)
    return [fr for onset, fr in anaphylaxis if onset is None or first <= onset]


def read_allergies(record: PatientRecord, term: Terminology, th: Thresholds) -> AllergiesPart:
    part = AllergiesPart()
    v = Validator()
    for res in record.of_type("AllergyIntolerance"):
        if not isinstance(res, dict):
            continue
        ver = code_of(res.get("verificationStatus"))
        clin = code_of(res.get("clinicalStatus")) or "active"
        if ver in ("refuted", "entered-in-error") or clin == "resolved":
            continue
        m = term.match(res.get("code"), medication=True)
        if m.ingredient is None or not v.valid(res):
            continue
        texts, severities = [], []
        for r in listify(res.get("reaction")):
            if isinstance(r, dict):
                severities.append(str(r.get("severity") or ""))
                texts.append(str(r.get("description") or ""))
                texts += [concept_text(man).split(" | ")[0] for man in listify(r.get("manifestation"))]
        texts = [t for t in texts if t]
        severity = reaction_severity(texts, "severe" if "severe" in severities else None,
                                     str(res.get("criticality") or ""))  # decision 37
        detail = f"{concept_label(res.get('code'))}" + (f": {', '.join(texts)}" if texts else "")
        fr = FactRef("Allergy/intolerance", detail + (" (severe)" if severity == SEVERE else ""), ref_of(res))
        if m.ingredient.drug_class == IG:
            part.ig_reactions.append((fr, severity))
        part.drug_allergies.setdefault(m.ingredient.key, []).append(fr)
    part.notes, part.skipped = v.notes, v.skipped
    return part
