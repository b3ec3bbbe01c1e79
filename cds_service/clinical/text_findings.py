"""Risk conditions written only as text (decision 29).

A Condition exported without a usable code ("History of DVT", "Factor V Leiden heterozygote") still tells a
clinician something the IVIG safety cards need. :func:`text_findings` names the value sets such a text
affirms, from the phrase lists in ``cds_service/data/text_findings.yaml``; a phrase in a clause that denies,
doubts or attributes it to someone else ("no DVT", "DVT ruled out", "? pregnancy", "family history of
factor V Leiden") does not count.

Only the safety side uses these findings, always labelled "(from text)"; the ladder and suggested orders
never rest on text (decisions 13 and 29). Pure functions; the phrase list is loaded once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from .memo import lru
from .resources import data_path

FROM_TEXT = "(from text)"
_CLAUSE_RE = re.compile(r"[.;:,\n()\[\]]|\bbut\b|\bhowever\b|\bexcept\b", re.IGNORECASE)
MAX_TEXT = 2000  # characters read from one Condition (longer text is cut, never scanned whole)


@dataclass(frozen=True, slots=True)
class Phrases:
    by_set: dict[str, tuple[re.Pattern[str], ...]]
    implies: dict[str, tuple[str, ...]]
    any_phrase: re.Pattern[str]  # every phrase of every value set, one pass to rule a text out
    before: re.Pattern[str]
    after: re.Pattern[str]


def _phrase_re(phrase: str) -> str:
    words = phrase.strip()
    star = words.endswith("*")
    words = words.rstrip("*")
    body = r"\s+".join(re.escape(w) for w in words.split())
    lead = r"(?<![\w])" if words[:1].isalnum() else ""
    tail = r"\w*" if star else (r"(?![\w])" if words[-1:].isalnum() else "")
    return lead + body + tail


def _cue_re(cues: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(_phrase_re(str(c)) for c in cues), re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def phrases() -> Phrases:
    import yaml

    doc = yaml.safe_load((data_path("data") / "text_findings.yaml").read_text(encoding="utf-8")) or {}
    before = doc.pop("negation_before", [])
    after = doc.pop("negation_after", [])
    implies = {k: tuple(v) for k, v in (doc.pop("implies", None) or {}).items()}
    by_set = {name: tuple(re.compile(_phrase_re(str(p)), re.IGNORECASE) for p in items)
              for name, items in doc.items()}
    every = [str(p) for items in doc.values() for p in items]
    return Phrases(by_set, implies, _cue_re(every), _cue_re(before), _cue_re(after))


def _clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = 0
    for m in _CLAUSE_RE.finditer(text, 0, start):
        left = m.end()
    m = _CLAUSE_RE.search(text, end)
    return left, (m.start() if m else len(text))


def affirmed(text: str, start: int, end: int, p: Phrases | None = None) -> bool:
    """Whether the phrase at ``text[start:end]`` is stated of the patient: no denial, doubt or other person
    in its clause, before or after it."""
    p = p or phrases()
    left, right = _clause_bounds(text, start, end)
    if p.before.search(text, left, start):
        return False
    return not p.after.search(text, end, right)


def text_findings(text: Any) -> dict[str, str]:
    """Value sets the text affirms, each with the words that matched (for the card's label)."""
    if not isinstance(text, str) or not text.strip():
        return {}
    return dict(_findings(text[:MAX_TEXT]))


@lru(maxsize=4096)
def _findings(text: str) -> tuple[tuple[str, str], ...]:
    """Memoised by the text: the same problem-list wording comes back in every request."""
    p = phrases()
    if not p.any_phrase.search(text):  # most coded problems' words name no risk condition at all
        return ()
    found: dict[str, str] = {}
    for name, patterns in p.by_set.items():
        for pat in patterns:
            hit = next((m for m in pat.finditer(text) if affirmed(text, m.start(), m.end(), p)), None)
            if hit is not None:
                found[name] = hit.group(0)
                break
    for name, words in list(found.items()):
        for implied in p.implies.get(name, ()):
            found.setdefault(implied, words)
    return tuple(found.items())


def condition_text(resource: dict[str, Any]) -> str:
    """The words of a Condition a clinician would read: code text, codings' displays and notes."""
    parts: list[str] = []
    code = resource.get("code")
    if isinstance(code, dict):
        if isinstance(code.get("text"), str):
            parts.append(code["text"])
        codings = code.get("coding")
        for cd in codings if isinstance(codings, list) else ():
            if isinstance(cd, dict) and isinstance(cd.get("display"), str):
                parts.append(cd["display"])
    notes = resource.get("note")
    for n in notes if isinstance(notes, list) else ():
        if isinstance(n, dict) and isinstance(n.get("text"), str):
            parts.append(n["text"])
    return ". ".join(parts)
