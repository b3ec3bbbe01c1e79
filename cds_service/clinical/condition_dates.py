"""Which date a Condition has, and where it came from (decision 24).

The order is ``onsetDateTime``; ``onsetPeriod.start``; ``onsetAge`` counted from the birth date; a readable
``onsetString`` ("June 2026", "2026-06", "03/2025", "15 June 2026", "2019"); ``recordedDate``. Whenever the
date is not ``onsetDateTime`` the card says which field gave it, because a recorded date can lag the onset
by years and an age gives only the year.

Pure functions of a Condition's JSON and a birth date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .memo import by_short_text

_SOURCE_WORDS = {
    "onsetDateTime": "",
    "onsetPeriod": "start of the onset period",
    "onsetAge": "age at onset",
    "onsetString": "onset written as text",
    "recordedDate": "date recorded (no onset given)",
}


@dataclass(frozen=True, slots=True)
class ConditionDate:
    when: datetime | None
    source: str  # a Condition field name, or "" when no date was found

    @property
    def note(self) -> str:
        """What a card says about the date: empty for ``onsetDateTime``, else where it came from."""
        return _SOURCE_WORDS.get(self.source, "")


_Y = re.compile(r"\d{4}")
_YM = re.compile(r"\d{4}-\d{2}")
_YMD = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    return _parse_iso_text(value)


@by_short_text(64)  # the result depends on the text alone; datetimes are immutable
def _parse_iso_text(value: str) -> datetime | None:
    v = value.strip()
    try:
        if _Y.fullmatch(v):
            return datetime(int(v), 1, 1, tzinfo=UTC)
        if _YM.fullmatch(v):
            return datetime(int(v[:4]), int(v[5:7]), 1, tzinfo=UTC)
        if _YMD.fullmatch(v):
            return datetime(int(v[:4]), int(v[5:7]), int(v[8:10]), tzinfo=UTC)
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        return None


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_MONTH_RE = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})\s+" + _MONTH_RE + r",?\s+(\d{4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b" + _MONTH_RE + r"\s+(\d{1,2}),?\s+(\d{4})\b")
_MONTH_YEAR = re.compile(r"\b" + _MONTH_RE + r",?\s+(\d{4})\b")
_NUMERIC_MONTH_YEAR = re.compile(r"\b(\d{1,2})/(\d{4})\b")
_YEAR = re.compile(r"\b(19\d{2}|20\d{2})\b")
_ISO_IN_TEXT = re.compile(r"\b(\d{4}-\d{2}(?:-\d{2})?)\b")


def parse_onset_string(text: Any) -> datetime | None:
    """A date read from free text, or None. Day-month order is not guessed: "03/04/2025" is unread, while
    "03/2025" is March 2025. A bare year gives 1 January of it; "childhood" or "years ago" give None."""
    if not isinstance(text, str):
        return None
    t = text.strip().lower()
    m = _ISO_IN_TEXT.search(t)
    if m:
        return _parse_iso(m.group(1))
    try:
        m = _DAY_MONTH_YEAR.search(t)
        if m:
            return datetime(int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1)), tzinfo=UTC)
        m = _MONTH_DAY_YEAR.search(t)
        if m:
            return datetime(int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2)), tzinfo=UTC)
        m = _MONTH_YEAR.search(t)
        if m:
            return datetime(int(m.group(2)), _MONTHS[m.group(1)], 1, tzinfo=UTC)
        if re.search(r"\d{1,2}/\d{1,2}/\d{2,4}", t):
            return None  # day and month order unknown
        m = _NUMERIC_MONTH_YEAR.search(t)
        if m and 1 <= int(m.group(1)) <= 12:
            return datetime(int(m.group(2)), int(m.group(1)), 1, tzinfo=UTC)
        m = _YEAR.search(t)
        if m:
            return datetime(int(m.group(1)), 1, 1, tzinfo=UTC)
    except ValueError:
        return None
    return None


_AGE_UNIT_DAYS = {"a": 365.25, "yr": 365.25, "yrs": 365.25, "year": 365.25, "years": 365.25, "mo": 30.4375,
                  "month": 30.4375, "months": 30.4375, "wk": 7, "week": 7, "weeks": 7, "d": 1, "day": 1,
                  "days": 1}


def date_at_age(age: Any, birth: date | datetime | None) -> datetime | None:
    """The date a FHIR Age (``{"value": 9, "code": "a"}``) was reached, from the birth date."""
    if birth is None or not isinstance(age, dict) or not isinstance(age.get("value"), int | float):
        return None
    unit = str(age.get("code") or age.get("unit") or "a").strip().lower()
    per = _AGE_UNIT_DAYS.get(unit)
    if per is None or age["value"] < 0:
        return None
    b = birth.date() if isinstance(birth, datetime) else birth
    start = datetime(b.year, b.month, b.day, tzinfo=UTC)
    if per == 365.25 and float(age["value"]).is_integer():
        try:
            return start.replace(year=b.year + int(age["value"]))
        except ValueError:  # 29 February
            return start.replace(year=b.year + int(age["value"]), day=28)
    return start + timedelta(days=float(age["value"]) * per)


def condition_date(res: dict[str, Any], birth: date | datetime | None = None) -> ConditionDate:
    """The date of a Condition and the field it came from (decision 24)."""
    when = _parse_iso(res.get("onsetDateTime"))
    if when is not None:
        return ConditionDate(when, "onsetDateTime")
    period = res.get("onsetPeriod")
    if isinstance(period, dict):
        when = _parse_iso(period.get("start"))
        if when is not None:
            return ConditionDate(when, "onsetPeriod")
    when = date_at_age(res.get("onsetAge"), birth)
    if when is not None:
        return ConditionDate(when, "onsetAge")
    when = parse_onset_string(res.get("onsetString"))
    if when is not None:
        return ConditionDate(when, "onsetString")
    when = _parse_iso(res.get("recordedDate"))
    if when is not None:
        return ConditionDate(when, "recordedDate")
    return ConditionDate(None, "")
