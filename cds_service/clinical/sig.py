"""Dose and frequency from the instructions text of a prescription (the "sig"), decisions 25 and 46.

Many EHR exports carry a glucocorticoid dose only as text ("take 2 tablets (10 mg) by mouth every 8 hours",
"60 mg daily for 1 week, then reduce by 10 mg each week until off") without structured timing. This module
reads such text into steps:

- a frequency is taken only from the words of the step it belongs to (decision 25): in "60 mg daily, then
  10 mg less each week" the step is once a day, and "each week" is the pace of the taper, not a dose;
- a taper gives several steps, the first usually the highest (decision 25); each step keeps its length when
  the text states one, so that the step in force today can be found (decision 46);
- anything that cannot be read stays unknown (``None``): a dose is never assumed to be low.

Pure functions of strings and dates; nothing here reads FHIR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from .memo import lru

# ------------------------------------------------------------------------------------------ frequency
_N = r"(\d+(?:\.\d+)?)"
_EVERY_HOURS = re.compile(r"\b(?:every|q)\s*" + _N + r"\s*(?:-\s*\d+\s*)?(?:h\b|hr\b|hrs\b|hours?\b)")
_EVERY_DAYS = re.compile(r"\bevery\s+" + _N + r"\s+days?\b")
_EVERY_WEEKS = re.compile(r"\bevery\s+" + _N + r"\s+weeks?\b")
# "2 times daily", "3 times a day", "2x daily" (Epic writes "2 (two) times daily", read as "2 times daily")
_TIMES_A_DAY = re.compile(r"\b" + _N + r"\s*(?:x|times)\s+(?:(?:a|per|each|every)\s+day\b|daily\b)")
# (pattern, administrations per day); the first that matches wins, so longer phrases come first
_FREQUENCY_WORDS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"\bfour times\b|\b4 times (?:a|per|each) day\b|\bq\.?i\.?d\.?(?![a-z])"), 4),
    (re.compile(r"\bthree times\b|\bthrice\b|\b3 times (?:a|per|each) day\b|\bt\.?i\.?d\.?(?![a-z])"), 3),
    (re.compile(r"\btwice\b|\b2 times (?:a|per|each) day\b|\bb\.?i\.?d\.?(?![a-z])"), 2),
    (re.compile(r"\bevery other day\b|\balternate days?\b|\bq\.?o\.?d\.?(?![a-z])|\bqad\b"), 0.5),
    (re.compile(r"\bonce (?:a|per|every) week\b|\bweekly\b|\bonce weekly\b|\bq\s?wk\b|\bqweek\b|/\s?week\b"
                r"|\bper week\b|\bevery week\b"), 1 / 7),
    (re.compile(r"\bonce (?:a|per|each) day\b|\bonce daily\b|\bdaily\b|\bevery day\b|\bevery morning\b"
                r"|\bevery evening\b|\bq\.?d\.?(?![a-z])|\bqam\b|\bqpm\b|\bqhs\b|\bat bedtime\b|\bnightly\b"
                r"|\bin the morning\b|/\s?day\b|\bper day\b|\ba day\b"), 1),
)


def frequency_per_day(phrase: str) -> float | None:
    """Administrations per day named in ``phrase`` (one step of a sig), or None when none is named.

    ``q8h``, "every 8 hours", ``tid`` -> 3; ``bid``, "twice daily", ``q12h`` -> 2; ``qid``, ``q6h`` -> 4;
    "daily", "once a day" -> 1; "weekly" -> 1/7; "every other day" -> 0.5; "every 3 days" -> 1/3.
    """
    t = _plain_numbers(phrase.lower())
    m = _EVERY_HOURS.search(t)
    if m:
        hours = float(m.group(1))
        return 24 / hours if hours > 0 else None
    m = _TIMES_A_DAY.search(t)
    if m and float(m.group(1)) > 0:
        return float(m.group(1))
    for rx, per_day in _FREQUENCY_WORDS:
        if rx.search(t):
            return per_day
    m = _EVERY_DAYS.search(t)
    if m and float(m.group(1)) > 0:
        return 1 / float(m.group(1))
    m = _EVERY_WEEKS.search(t)
    if m and float(m.group(1)) > 0:
        return 1 / (7 * float(m.group(1)))
    return None


# ------------------------------------------------------------------------------------------ steps
@dataclass(frozen=True, slots=True)
class SigStep:
    """One step of a sig: the dose per administration, how often, and for how long (None = not stated)."""

    mg: float | None
    per_day: float | None
    days: float | None
    text: str

    @property
    def daily_mg(self) -> float | None:
        if self.mg is None or self.per_day is None:
            return None
        return self.mg * self.per_day


_MG = re.compile(_N + r"\s*(mg|milligrams?|g|grams?)\b(?!\s*/\s*(?:m?l|kg))")
_TABLETS = re.compile(_N + r"\s*(?:tablets?|tabs?|caps?|capsules?)\b")
_WORD_NUMBERS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10", "half": "0.5", "a half": "0.5"}
_WORD_NUMBER_RE = re.compile(r"\b(" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")\b")
_DURATION = re.compile(r"(?:\bfor|\bx|\btimes|×)\s*" + _N + r"\s*(d|days?|wk|wks|weeks?|mo|months?)\b")
_THEN = re.compile(r"\bthen\b|\bfollowed by\b|;")
_REDUCE = re.compile(
    r"(?:reduce|decrease|taper|lower|wean|drop|cut)\w*\s+(?:the\s+dose\s+)?by\s+" + _N + r"\s*mg"
    r"|" + _N + r"\s*mg\s+less")
_PACE = re.compile(r"(?:every|each|per|a)\s+(?:" + _N + r"\s+)?(day|days|week|weeks|wk|month)|\b(weekly|daily)\b")
_UNTIL = re.compile(r"\b(?:until|to)\s+(?:(off|stopped|discontinued|zero)|" + _N + r"\s*mg)")
_MAX_TAPER_STEPS = 60


# A number followed by the same number in brackets, as Epic writes sigs: "2 (2) times daily" after the words
# were turned into digits ("2 (two) times daily").
_REPEATED_NUMBER = re.compile(r"\b" + _N + r"\s*\(\s*\1\s*\)")


def _numbers_as_digits(text: str) -> str:
    return _WORD_NUMBER_RE.sub(lambda m: _WORD_NUMBERS[m.group(1)], text)


def _plain_numbers(text: str) -> str:
    """Lower-case ``text`` with number words as digits and Epic's "2 (two)" as "2"."""
    return _REPEATED_NUMBER.sub(r"\1", _numbers_as_digits(text))


def _dose_mg(clause: str, strength_mg: float | None) -> float | None:
    """The dose of one step: an amount in brackets ("2 tablets (10 mg)") first, then tablets times the
    product strength, then the first amount named."""
    amounts = [(m.start(), float(m.group(1)) * (1000 if m.group(2).startswith("g") else 1))
               for m in _MG.finditer(clause)]
    for start, value in amounts:
        if clause[:start].rstrip().endswith("("):
            return value
    m = _TABLETS.search(clause)
    if m and strength_mg:
        return float(m.group(1)) * strength_mg
    return amounts[0][1] if amounts else None


def _duration_days(clause: str) -> float | None:
    m = _DURATION.search(clause)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    if unit.startswith(("w",)):
        return value * 7
    if unit.startswith("mo"):
        return value * 30
    return value


def _taper_rule(clause: str) -> tuple[float, float, float] | None:
    """(mg less per step, days per step, mg to stop at) of "reduce by 10 mg every week until off"."""
    m = _REDUCE.search(clause)
    if not m:
        return None
    less = float(m.group(1) or m.group(2))
    rest = clause[m.end():]
    p = _PACE.search(rest) or _PACE.search(clause[:m.start()])
    if not p or less <= 0:
        return None
    if p.group(3):
        days = 7.0 if p.group(3) == "weekly" else 1.0
    else:
        n = float(p.group(1)) if p.group(1) else 1.0
        unit = p.group(2)
        days = n * (7 if unit.startswith("w") else 30 if unit.startswith("mo") else 1)
    u = _UNTIL.search(rest)
    floor = float(u.group(2)) if u and u.group(2) else 0.0
    return less, days, floor


MEMO_MAX_TEXT = 512  # characters of a sig whose steps are remembered


def parse_sig(text: str, strength_mg: float | None = None) -> list[SigStep]:
    """The steps of a sig, in order. ``strength_mg`` turns "take 2 tablets" into mg (None: unknown).

    Each step's frequency comes from its own words; a step without one inherits the previous step's (a
    taper written "60 mg daily for a week, then 50 mg for a week" keeps "daily"). A rule such as "then
    reduce by 10 mg every week until off" is unrolled into its steps, capped at a sane number.
    Memoised by (text, strength) for a plain string and a positive float or None: the steps are frozen and
    depend on nothing else; each caller gets its own list.
    """
    if type(text) is str and len(text) <= MEMO_MAX_TEXT and (
            strength_mg is None or type(strength_mg) is float and strength_mg > 0):  # 0.0 == -0.0: not memoised
        return list(_parse_sig_memo(text, strength_mg))
    return _parse_sig(text, strength_mg)


@lru(maxsize=4096)
def _parse_sig_memo(text: str, strength_mg: float | None) -> tuple[SigStep, ...]:
    return tuple(_parse_sig(text, strength_mg))


def _parse_sig(text: str, strength_mg: float | None) -> list[SigStep]:
    if not isinstance(text, str) or not text.strip():
        return []
    t = _plain_numbers(text.lower())
    steps: list[SigStep] = []
    for raw in _THEN.split(t):
        clause = raw.strip(" ,.")
        if not clause:
            continue
        rule = _taper_rule(clause)
        if rule is not None:
            head = clause[:_REDUCE.search(clause).start()]  # type: ignore[union-attr]
            if _dose_mg(head, strength_mg) is not None:  # "60 mg/day, taper by 5 mg every 2 weeks"
                steps.append(_step(head, strength_mg, steps))
        if rule is not None and steps and steps[-1].mg is not None:
            less, days, floor = rule
            prev = steps[-1]
            if prev.days is None:  # "60 mg/day, then reduce by 10 mg every week": the first step lasts a pace too
                prev = steps[-1] = SigStep(prev.mg, prev.per_day, days, prev.text)
            mg = prev.mg - less  # type: ignore[operator]
            n = 0
            while mg > floor + 1e-9 and n < _MAX_TAPER_STEPS:
                steps.append(SigStep(mg, prev.per_day, days, clause))
                mg -= less
                n += 1
            if floor > 0:
                steps.append(SigStep(floor, prev.per_day, None, clause))
            continue
        step = _step(clause, strength_mg, steps)
        if step.mg is None and step.per_day is None:
            continue  # "as directed", "with food": no step
        steps.append(step)
    return steps


def _step(clause: str, strength_mg: float | None, before: list[SigStep]) -> SigStep:
    per_day = frequency_per_day(_without_duration(clause))
    if per_day is None and before:
        per_day = before[-1].per_day
    return SigStep(_dose_mg(clause, strength_mg), per_day, _duration_days(clause), clause)


def _without_duration(clause: str) -> str:
    """The clause minus "for 2 weeks": a step's length is not its frequency ("x 1 week" is not weekly)."""
    return _DURATION.sub(" ", clause)


# ------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True, slots=True)
class DoseStep:
    """A daily dose in force from ``start`` to ``end`` (None: open-ended or not known)."""

    daily_mg: float | None
    start: datetime | None
    end: datetime | None


def schedule(steps: list[SigStep], start: datetime | None) -> list[DoseStep]:
    """Dates of each step, counted from the prescription's start; unknown once a step has no length."""
    out: list[DoseStep] = []
    at = start
    for s in steps:
        end = at + timedelta(days=s.days) if at is not None and s.days is not None else None
        out.append(DoseStep(s.daily_mg, at, end))
        at = end
    return out


def highest(steps: list[DoseStep]) -> DoseStep | None:
    """The step with the highest daily dose (decides whether a first-line trial took place, decision 46)."""
    top = None
    for s in steps:  # the first of equal highest steps, as max() would choose
        if s.daily_mg is not None and (top is None or s.daily_mg > (top.daily_mg or 0.0)):
            top = s
    return top


def current(steps: list[DoseStep], now: datetime) -> DoseStep | None:
    """The step in force at ``now``: the one whose dates include it, else the latest step that has begun
    (decision 46). None when the text does not say where a taper stands today (a step without a length
    before later steps); a single undated step is in force."""
    if not steps:
        return None
    if steps[0].start is None:
        return steps[0] if len(steps) == 1 else None  # undated taper: where it stands is unknown
    for n, s in enumerate(steps):
        if s.start is None:
            return None  # an earlier step has no length: where the taper stands is unknown
        if s.start <= now and (s.end is None or now < s.end):
            return s if s.end is not None or n == len(steps) - 1 else None
    begun = [s for s in steps if s.start is not None and s.start <= now]
    return begun[-1] if begun else None
