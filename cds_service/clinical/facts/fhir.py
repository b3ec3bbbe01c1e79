"""Reading FHIR shapes: dates, codes, routes, timing and doses. Pure functions of their arguments."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from .. import sig, units
from ..memo import Memo, by_short_text
from ..terminology import MEMO_MAX_ENTRIES, MEMO_MAX_TEXT, ConceptMatch, concept_key, concept_label, concept_text


def parse_dt(value: Any) -> datetime | None:
    """FHIR date/dateTime/instant (incl. partial dates) -> aware datetime (UTC when no zone)."""
    if value is None:  # an absent element
        return None
    return _parse_dt(value)


@by_short_text(64)
def _parse_dt(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    v = value.strip()
    try:
        if len(v) == 4:
            return datetime(int(v), 1, 1, tzinfo=UTC)
        if len(v) == 7:
            return datetime(int(v[:4]), int(v[5:7]), 1, tzinfo=UTC)
        if len(v) == 10:
            return datetime(int(v[:4]), int(v[5:7]), int(v[8:10]), tzinfo=UTC)
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        return None


def code_of(concept: Any) -> str:
    """First coding code (lower case) or text of a status-like CodeableConcept/code."""
    if isinstance(concept, str):
        return concept.lower()
    if isinstance(concept, dict):
        for cd in concept.get("coding") or ():
            if isinstance(cd, dict) and isinstance(cd.get("code"), str):
                return cd["code"].lower()
        if isinstance(concept.get("text"), str):
            return concept["text"].lower()
    return ""


def listify(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def label_of(concept: Any, m: ConceptMatch) -> str:
    """Concept text/display; a bare code gets the display terminology.json gives it."""
    lab = concept_label(concept)
    if not m.hits:
        return lab
    bare = lab.replace(".", "").upper()
    for h in m.hits:
        if h.via in ("code", "prefix", "atc") and h.code.replace(".", "") == bare \
                and h.display and h.display != lab:
            return f"{h.display} ({lab})"
        if h.via == "code" and h.code == lab and h.display:
            return f"{h.display} ({lab})"
    return lab


def ref_of(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid and rtype else None



_ROUTE_SCT = {
    "26643006": "oral", "47625008": "iv", "78421000": "im", "34206005": "sc", "6064005": "topical",
    "18679011000001101": "inhaled", "447694001": "inhaled", "46713006": "nasal", "54485002": "ophthalmic",
    "10547007": "otic", "12130007": "intra-articular", "37161004": "rectal", "45890007": "transdermal",
    "37839007": "sublingual", "372449004": "dental", "372464004": "intradermal", "58100008": "intra-arterial",
}
_ROUTE_WORDS = (
    ("iv", re.compile(r"intravenous|\biv\b|\bi\.v\.|infusion")),
    ("sc", re.compile(r"subcutaneous|\bsc\b|\bs\.c\.|\bsubq\b|\bsq\b")),
    ("im", re.compile(r"intramuscular|\bim\b")),
    ("inhaled", re.compile(r"inhal|nebuli|respiratory \(inhalation\)|metered dose|\bmdi\b")),
    ("nasal", re.compile(r"nasal")),
    ("ophthalmic", re.compile(r"ophthalmic|\beye\b|intravitreal")),
    ("otic", re.compile(r"\botic\b|\bear\b")),
    ("topical", re.compile(r"topical|cream|ointment|lotion|\bgel\b|cutaneous|shampoo|foam")),
    ("intra-articular", re.compile(r"intra-?articular")),
    ("rectal", re.compile(r"rectal|enema|suppositor")),
    ("transdermal", re.compile(r"transdermal|\bpatch\b")),
    ("oral", re.compile(r"\boral|tablet|capsule|\bpo\b|by mouth|elixir|solution, oral")),
    ("iv", re.compile(r"injection|injectable|for injection")),
)



_ROUTE_MEMO = Memo(MEMO_MAX_ENTRIES)


def route_kind(route_concept: Any, fallback_text: str = "") -> str | None:
    """Classify a route CodeableConcept (and, failing that, the product text)."""
    if route_concept is None and fallback_text == "":  # a dosage without a route, no text to fall back on
        return None
    if type(fallback_text) is not str or len(fallback_text) > MEMO_MAX_TEXT:
        return _route_kind(route_concept, fallback_text)
    if isinstance(route_concept, dict):
        ckey = concept_key(route_concept)
        if ckey is None:
            return _route_kind(route_concept, fallback_text)
    else:
        ckey = None  # not an object: only the text counts
    key = (ckey, fallback_text)
    try:
        return _ROUTE_MEMO[key]
    except KeyError:
        return _ROUTE_MEMO.remember(key, _route_kind(route_concept, fallback_text))


def _route_kind(route_concept: Any, fallback_text: str = "") -> str | None:
    if isinstance(route_concept, dict):
        for cd in route_concept.get("coding") or ():
            if isinstance(cd, dict):
                k = _ROUTE_SCT.get(str(cd.get("code") or ""))
                if k:
                    return k
        text = concept_text(route_concept).lower()
        for kind, rx in _ROUTE_WORDS:
            if text and rx.search(text):
                return kind
    if fallback_text:
        t = fallback_text.lower()
        for kind, rx in _ROUTE_WORDS:
            if rx.search(t):
                return kind
    return None


PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
_TIMING_CODES = {"qd": 1, "bid": 2, "tid": 3, "qid": 4, "qod": 0.5, "wk": 1 / 7, "am": 1, "pm": 1, "q4h": 6,
                 "q6h": 4, "q8h": 3, "q12h": 2, "q24h": 1}
_TEXT_FREQ = (
    (re.compile(r"once (a|per|every) week|weekly|every week|/week|per week|q ?week|q ?wk|qweek|1x/wk"), 1 / 7),
    (re.compile(r"twice (a|per) day|twice daily|\bbid\b|2 times (a|per) day"), 2),
    (re.compile(r"three times|\btid\b"), 3),
    (re.compile(r"every other day|alternate day|\bqod\b"), 0.5),
    (re.compile(r"once (a|per) day|once daily|\bdaily\b|every day|every morning|\bqd\b|\bqam\b|/day|per day"), 1),
)


def per_day_of(dosage: dict[str, Any]) -> float | None:
    timing = dosage.get("timing")
    if isinstance(timing, dict):
        rep = timing.get("repeat")
        if isinstance(rep, dict):
            freq = rep.get("frequencyMax") or rep.get("frequency")
            period = rep.get("period")
            unit = rep.get("periodUnit")
            if isinstance(period, int | float) and period > 0 and unit in PERIOD_DAYS:
                f = freq if isinstance(freq, int | float) and freq > 0 else 1
                return f / (period * PERIOD_DAYS[unit])
            if isinstance(freq, int | float) and freq > 0 and unit is None and period is None:
                return None
        code = code_of(timing.get("code"))
        if code in _TIMING_CODES:
            return _TIMING_CODES[code]
    text = " ".join(
        str(x) for x in (dosage.get("text"), dosage.get("patientInstruction"), concept_text(dosage.get("timing", {}).get("code") if isinstance(dosage.get("timing"), dict) else None)) if x  # noqa: E501
    ).lower()
    if text:
        steps = sig.parse_sig(text)  # the first step is the phrase that carries the dose (decision 25)
        if steps and steps[0].per_day is not None:
            return steps[0].per_day
        for rx, val in _TEXT_FREQ:
            if rx.search(text):
                return val
    return None


def dosage_text(dosage: dict[str, Any]) -> str:
    """The instructions of one dosage line as written (text and patient instruction)."""
    return " ".join(str(x) for x in (dosage.get("text"), dosage.get("patientInstruction")) if isinstance(x, str))


def dosage_bounds(dosage: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The dates one dosage line applies to (timing.repeat.boundsPeriod), as a taper's steps carry them."""
    t = dosage.get("timing")
    rep = t.get("repeat") if isinstance(t, dict) else None
    bp = rep.get("boundsPeriod") if isinstance(rep, dict) else None
    if not isinstance(bp, dict):
        return None, None
    return parse_dt(bp.get("start")), parse_dt(bp.get("end"))


def strength_mg(product_text: str) -> float | None:
    """The one strength in mg a product name states ("prednisoLONE 5 mg tablet"), else None."""
    strengths = {float(m) for m in _STRENGTH_RE.findall(product_text or "")}
    return strengths.pop() if len(strengths) == 1 else None


_STRENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b(?!\s*/\s*m?l)", re.IGNORECASE)
_TABLET_UNITS = {"{tbl}", "{tablet}", "{tablets}", "tab", "tabs", "tablet", "tablets", "{capsule}", "capsule",
                 "{cap}", "1", "{each}", "ea"}


def dose_mg_of(dosage: dict[str, Any], product_text: str) -> float | None:
    """mg per administration from doseAndRate.doseQuantity (mg, g, or tablets x strength)."""
    for dar in listify(dosage.get("doseAndRate")):
        if not isinstance(dar, dict):
            continue
        q = dar.get("doseQuantity")
        if not isinstance(q, dict):
            rng = dar.get("doseRange")
            q = rng.get("high") if isinstance(rng, dict) else None
        if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
            continue
        unit = str(q.get("code") or q.get("unit") or "").strip()
        f = units.factor("mass_dose", unit)
        if f is not None:
            return float(q["value"]) * f
        if unit.lower() in _TABLET_UNITS:
            strengths = {float(m) for m in _STRENGTH_RE.findall(product_text or "")}
            if len(strengths) == 1:
                return float(q["value"]) * strengths.pop()
    # MedicationAdministration.dosage.dose
    q = dosage.get("dose")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float):
        f = units.factor("mass_dose", str(q.get("code") or q.get("unit") or ""))
        if f is not None:
            return float(q["value"]) * f
    return None


_INEFFECTIVE_RE = re.compile(
    r"treatment failure|therapy failure|failed (therapy|treatment)|no response|non-?respon|ineffective|"
    r"not effective|lack of (efficacy|effect|response)|progression|progressive disease|relapse|refractory|"
    r"worsen|not working|no improvement|inadequate response", re.IGNORECASE)
_INTOLERANCE_RE = re.compile(
    r"adverse|side.?effect|toxic|allerg|intoleran|hyperglyc|diabet|psychos|fracture|osteopor|cytopeni|"
    r"neutropeni|leukopeni|thrombocytopeni|hepatotox|transaminase|liver|hepatitis|pneumonitis|infusion reaction|"
    r"reaction|cushing|weight gain|insomnia|mood|infection|rash|nausea|not tolerated", re.IGNORECASE)


def classify_stop_reason(texts: list[str]) -> str | None:
    """B3: intolerance / ineffective / other, from statusReason text or display."""
    text = " | ".join(t for t in texts if t)
    if not text:
        return None
    if _INEFFECTIVE_RE.search(text):
        return "ineffective"
    if _INTOLERANCE_RE.search(text):
        return "intolerance"
    return "other"




def qty_text(res: dict[str, Any]) -> str:
    q = res.get("valueQuantity")
    if isinstance(q, dict):
        return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    return "?"


def value_text(res: dict[str, Any]) -> str:
    if isinstance(res.get("valueCodeableConcept"), dict):
        return concept_label(res["valueCodeableConcept"])
    if isinstance(res.get("valueString"), str):
        return res["valueString"]
    return qty_text(res)
