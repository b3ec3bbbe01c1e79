"""When a drug counts as a neurosarcoidosis trial, and which findings may be held against it.

Decisions 19-22 and 44, as pure functions of dates (no FHIR here):

- decision 19: a drug is judged as a neurosarcoidosis trial only from the neurosarcoidosis onset on, unless
  its stated reason is neurosarcoidosis itself; a course that ended before the onset is *earlier exposure*,
  shown on the card, never a rung that failed;
- decision 20: the Condition that records the diagnosis is why treatment began; its onset is never evidence
  of continued disease;
- decision 21: "refractory" needs the lower rungs actually tried (S5: a glucocorticoid and a second-line
  trial; S7: also an anti-TNF trial);
- decision 22: an intravenous pulse opens a glucocorticoid trial; the minimum trial runs from the first
  pulse like any other;
- decision 44: a drug answers for disease activity only while it acts: while it is given, and for infused
  drugs through their effect window after the last infusion. After a stop, whatever the reason, a relapse is
  not refractoriness to that drug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol


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


class _Dated(Protocol):
    reference: str | None
    clinical_status: str

    @property
    def date(self) -> datetime | None: ...


_RELAPSE_STATUSES = ("recurrence", "relapse")


def diagnosis_reference(conditions: Iterable[Any]) -> str | None:
    """The Condition that records the neurosarcoidosis diagnosis (decision 20): the earliest dated one that
    is not itself recorded as a relapse or recurrence. Its onset is the reason treatment began."""
    best: tuple[datetime, str] | None = None
    for c in conditions:
        d = getattr(c, "date", None)
        ref = getattr(c, "reference", None)
        if d is None or ref is None or getattr(c, "clinical_status", "") in _RELAPSE_STATUSES:
            continue
        if best is None or d < best[0]:
            best = (d, ref)
    return best[1] if best else None


# ------------------------------------------------------------------------------------------ decision 21
@dataclass(frozen=True, slots=True)
class RungsTried:
    """Which rungs had a trial given for neurosarcoidosis (decisions 19-21)."""

    glucocorticoid: bool
    second_line: bool
    anti_tnf: bool

    def may_be_second_line_refractory(self) -> bool:
        """S5 needs a glucocorticoid trial and a second-line trial (decision 21)."""
        return self.glucocorticoid and self.second_line

    def may_be_refractory_to_all(self) -> bool:
        """S7 needs every rung tried (decision 21)."""
        return self.glucocorticoid and self.second_line and self.anti_tnf

    def missing_below(self, tier: int) -> list[str]:
        """Rungs below an order's tier that were never tried (decision 27 names the glucocorticoid rung:
        starting an anti-TNF agent without methotrexate is accepted practice, A13)."""
        return ["glucocorticoid"] if tier >= 2 and not self.glucocorticoid else []
