"""Mentions in free text that are affirmed, not denied (decision 47).

Problem-list text often says what a patient does *not* have: "Pulmonary sarcoidosis - no nervous system
involvement", "optic disc swelling excluded", "r/o neurosarcoidosis". A nervous-system word in such a phrase
must never turn a sarcoidosis Condition into neurosarcoidosis.

The method is the simple one clinicians' text tools have long used (a negation cue in the same clause as the
mention negates it). It errs on the side of "not affirmed": a clause that carries any negation or
uncertainty cue does not count, so a mixed clause such as "no cardiac or nervous system involvement" is read
as denying both. Uncertain wording ("possible", "suspected", "rule out", "?") is not an affirmation either.
"""

from __future__ import annotations

import re

from .memo import by_short_text

# Clause boundaries: sentence ends, semicolons, colons, brackets, dashes between words, "but"/"however".
_CLAUSES = re.compile(r"[.;:|()\[\]\n]|\s[-–—]\s|\bbut\b|\bhowever\b|\balthough\b", re.IGNORECASE)
_CUES = re.compile(
    r"\bno\b|\bnot\b|\bnon\b|\bwithout\b|\bdenie[sd]\b|\bdeny\b|\bnegative\b|\bfree of\b|\babsen(?:t|ce)\b|"
    r"\bnever\b|\bnone\b|\bnor\b|\bexclud\w*|\bruled? out\b|\br/o\b|\bunlikely\b|\bresolved\b|\bnormal\b|"
    r"\bpossible\b|\bpossibly\b|\bsuspect\w*|\bquery\b|\bquestionable\b|\?|\bunremarkable\b|\bwnl\b",
    re.IGNORECASE)


def clauses(text: str) -> list[str]:
    return [c.strip() for c in _CLAUSES.split(text or "") if c and c.strip()]


MEMO_MAX_TEXT = 512  # characters of a text whose answer is remembered


def affirmed(text: str, pattern: re.Pattern[str]) -> bool:
    """True when ``pattern`` occurs in ``text`` in a clause free of negation and uncertainty cues.

    Memoised by (text, pattern) for a plain string: the answer depends on nothing else, and the same
    problem-list wording comes back in every request."""
    if not isinstance(text, str) or not text:
        return False
    return _affirmed(text, pattern)


@by_short_text(MEMO_MAX_TEXT)
def _affirmed(text: str, pattern: re.Pattern[str]) -> bool:
    return any(pattern.search(c) and not _CUES.search(c) for c in clauses(text))

