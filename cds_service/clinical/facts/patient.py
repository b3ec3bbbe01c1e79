"""Reader of the Patient resource: age and administrative sex."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..record import PatientRecord
from ..terminology import Terminology
from ..thresholds import Thresholds
from .fhir import parse_dt
from .validation import Validator


@dataclass
class PatientPart:
    age: int | None = None
    sex: str | None = None  # male | female | None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def age_on(birth: datetime, today: datetime) -> int:
    """Completed years between the birth date and ``today``."""
    b, t = birth.date(), today.date()
    return t.year - b.year - ((t.month, t.day) < (b.month, b.day))


def read_patient(record: PatientRecord, term: Terminology, th: Thresholds) -> PatientPart:
    p = record.patient
    part = PatientPart()
    if not isinstance(p, dict):
        part.notes.append("no Patient resource: age and sex unknown")
        return part
    v = Validator()
    if v.valid(p):
        bd = parse_dt(p.get("birthDate"))
        if bd:
            part.age = age_on(bd, now_of(record))
        g = p.get("gender")
        if g in ("male", "female"):
            part.sex = g
    part.notes, part.skipped = v.notes, v.skipped
    return part


def birth_date_of(record: PatientRecord) -> datetime | None:
    """The patient's birth date (for a Condition dated by the age at onset, decision 24)."""
    p = record.patient
    return parse_dt(p.get("birthDate")) if isinstance(p, dict) else None


def now_of(record: PatientRecord) -> datetime:
    """The evaluation time of the record, made timezone-aware (UTC when none was given)."""
    return record.now if record.now.tzinfo else record.now.replace(tzinfo=UTC)
