"""When a drug counts as a neurosarcoidosis trial, and which findings may be held against it.

Decisions 19-22 and 44, as pure functions of dates (no FHIR here):

- decision 19: a drug is judged as a neurosarcoidosis trial only from the neurosarcoidosis onset on, unless
  its stated reason is neurosarcoidosis itself; a course that ended before the onset is *earlier exposure*,
  shown on the card, never a rung that failed;
- decision 20: the Condition that records the diagnosis is why treatment began; its onset is never evidence
  of continued disease;
- decision 22: an intravenous pulse opens a glucocorticoid trial; the minimum trial runs from the first
  pulse like any other;
- decision 44: a drug answers for disease activity only while it acts: while it is given, and for infused
  drugs through their effect window after the last infusion. After a stop, whatever the reason, a relapse is
  not refractoriness to that drug.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any


def ns_period_start(start: datetime | None, ns_onset: datetime | None, reason_is_ns: bool) -> datetime | None:
    """Where a drug's neurosarcoidosis trial begins (decision 19): its start when given for
    neurosarcoidosis or begun after the onset, else the onset (the drug counts from then on)."""
    if start is None:
        return None
    if reason_is_ns or ns_onset is None or start >= ns_onset:
        return start
    return ns_onset


def ended_before_onset(start: datetime | None, end: datetime | None, current: bool, ns_onset: datetime | None,
                       reason_is_ns: bool) -> bool:
    """Earlier exposure (decision 19): a course that was over before neurosarcoidosis began, and was not
    given for it. It is shown on the card and never counts as a rung tried or failed."""
    if reason_is_ns or ns_onset is None or current:
        return False
    last = end or start
    return last is not None and last < ns_onset


def acting_until(end: datetime | None, current: bool, effect_days: int = 0) -> datetime | None:
    """Until when a drug answers for disease activity (decision 44); None means it still does.

    A current drug acts now. A stopped or completed one acts until its end date plus the effect window of
    an infused drug (``effect_days``; 0 for tablets). Without an end date a past drug is taken to act until
    its last known date only, which the caller passes as ``end``."""
    if current:
        return None
    if end is None:
        return None
    return end + timedelta(days=effect_days)


def counts_against(when: datetime | None, trial_start: datetime | None, min_days: int,
                   acting_end: datetime | None) -> bool:
    """A finding dated ``when`` is evidence against a drug: at least one minimum trial after the trial began
    (decisions 5 and 22) and while the drug still acted (decision 44)."""
    if when is None or trial_start is None:
        return False
    if when < trial_start + timedelta(days=min_days):
        return False
    return acting_end is None or when <= acting_end


_RELAPSE_STATUSES = ("recurrence", "relapse")


def diagnosis_references(conditions: Iterable[Any]) -> frozenset[str]:
    """The Conditions that record the neurosarcoidosis diagnosis (decision 20): those dated on the earliest
    date, not themselves recorded as a relapse or recurrence (a diagnosis often comes as several problems
    entered the same day). Their onset is the reason treatment began, never evidence against it."""
    dated = [(c.date, c.reference) for c in conditions
             if getattr(c, "date", None) is not None and getattr(c, "reference", None) is not None
             and getattr(c, "clinical_status", "") not in _RELAPSE_STATUSES]
    if not dated:
        return frozenset()
    first = min(d for d, _ in dated)
    return frozenset(ref for d, ref in dated if d == first)
