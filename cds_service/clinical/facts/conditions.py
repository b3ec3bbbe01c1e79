"""Reader of Condition resources: neurosarcoidosis status (B1, A15, A16), its manifestations, and the
risk factors and contraindications that ``criteria/risk_factors.yaml`` and ``criteria/contraindications.yaml``
list by value-set category."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import criteria
from ..condition_dates import ConditionDate, condition_date
from ..memo import lru
from ..negation import affirmed
from ..record import PatientRecord
from ..terminology import ConceptMatch, Terminology, concept_codes, concept_text
from ..text_findings import FROM_TEXT, condition_text, text_findings
from ..thresholds import Thresholds
from ..thrombosis import thrombosis_is_active
from .fhir import code_of, label_of, listify, parse_dt, ref_of
from .model import Factor, FactRef, NSCondition
from .patient import birth_date_of
from .validation import Validator

_SFN_EVIDENCE_RE = re.compile(r"small[- ]?fib(er|re)|\bsfn\b|ienfd|intra-?epidermal nerve|skin biops",
                              re.IGNORECASE)
_NEURO_SITE_RE = re.compile(r"brain|cerebr|spinal|mening|cranial|nerve|neur|optic|pituitar|hypothalam|"
                            r"nervous|myel|leptomening", re.IGNORECASE)
_SARCOID_WORD_RE = re.compile(r"sarcoid", re.IGNORECASE)
_ACTIVE = ("active", "recurrence", "relapse")
_SUSPECTED = ("provisional", "differential", "unconfirmed")
_INTOLERANCE_OR_ANAPHYLAXIS = frozenset({"drug.anaphylaxis", "gc.intolerance", "is.intolerance"})


@dataclass
class ConditionsPart:
    # --- neurosarcoidosis (B1, A15, A16)
    ns_status: str = "none"  # active | suspected | possible | history | none
    ns_in_remission: bool = False
    ns_conditions: list[NSCondition] = field(default_factory=list)
    possible_ns: list[NSCondition] = field(default_factory=list)
    sarcoidosis: list[FactRef] = field(default_factory=list)
    ns_onset: datetime | None = None
    sfn: list[NSCondition] = field(default_factory=list)
    conduction_block: list[NSCondition] = field(default_factory=list)
    bulbar: list[NSCondition] = field(default_factory=list)
    relapses: list[NSCondition] = field(default_factory=list)
    gc_intolerance: list[NSCondition] = field(default_factory=list)
    is_intolerance: list[NSCondition] = field(default_factory=list)
    # --- risk factors (criteria/risk_factors.yaml: the ``feeds`` names are these fields)
    thrombosis_factors: list[Factor] = field(default_factory=list)
    hyperviscosity: list[Factor] = field(default_factory=list)
    renal_critical: list[Factor] = field(default_factory=list)
    renal_factors: list[Factor] = field(default_factory=list)
    heart_failure: list[Factor] = field(default_factory=list)
    iga_deficiency: list[FactRef] = field(default_factory=list)
    prior_ig_reaction: list[FactRef] = field(default_factory=list)
    pregnancy: list[FactRef] = field(default_factory=list)
    aki: list[FactRef] = field(default_factory=list)
    contraindications: list[Factor] = field(default_factory=list)
    anaphylaxis: list[tuple[datetime | None, FactRef]] = field(default_factory=list)  # read with IG exposures
    # --- for the other readers: value sets of each read Condition, and the neurosarcoidosis ones
    by_reference: dict[str, ConceptMatch] = field(default_factory=dict)
    ns_references: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Read:
    """One Condition that passed the checks, with what the classification needs."""

    res: dict[str, Any]
    m: ConceptMatch
    clin: str
    verification: str
    birth: datetime | None = None

    _dated: ConditionDate | None = None

    @property
    def dated(self) -> ConditionDate:
        """The Condition's date by decision 24 (onsetDateTime, onsetPeriod, onsetAge, onsetString, recordedDate)
        and the field it came from; read once."""
        if self._dated is None:
            self._dated = condition_date(self.res, self.birth)
        return self._dated

    @property
    def when(self) -> datetime | None:
        return self.dated.when

    @property
    def active(self) -> bool:
        return self.clin in _ACTIVE


def read_conditions(record: PatientRecord, term: Terminology, th: Thresholds) -> ConditionsPart:
    part = ConditionsPart()
    v = Validator()
    birth = birth_date_of(record)
    read: list[_Read] = []
    for res in record.of_type("Condition"):
        if not isinstance(res, dict):
            continue
        m = term.match(res.get("code"))
        if m.names:
            c = _read_one(res, term, v, birth, m)
            if c is not None:
                read.append(c)
        elif (t := _read_text_only(res, term, v, birth)) is not None:
            _add_risk_factors(part, t, ref_of(t.res), from_text=True)  # safety only, never the ladder
    for c in read:
        ref = ref_of(c.res)
        if ref:
            part.by_reference[ref] = c.m
        if "sarcoidosis" in c.m.names and c.active:
            part.sarcoidosis.append(FactRef("Sarcoidosis", f"{label_of(c.res.get('code'), c.m)} ({c.clin})", ref))
        _add_risk_factors(part, c, ref)
    _add_neurosarcoidosis(part, read, term)
    part.notes, part.skipped = v.notes, v.skipped
    return part


def _read_one(res: Any, term: Terminology, v: Validator, birth: datetime | None,
              m: ConceptMatch | None = None) -> _Read | None:
    if not isinstance(res, dict):
        return None
    m = m or term.match(res.get("code"))
    if not m.names:
        return None
    ver = code_of(res.get("verificationStatus"))
    if ver in ("refuted", "entered-in-error"):
        return None
    clin = code_of(res.get("clinicalStatus"))
    if not clin:
        clin = "resolved" if (res.get("abatementDateTime") or res.get("abatementPeriod")) else "active"
    if not v.valid(res):
        return None
    return _Read(res, m, clin, "suspected" if ver in _SUSPECTED else "confirmed", birth)


def _read_text_only(res: dict[str, Any], term: Terminology, v: Validator, birth: datetime | None) -> _Read | None:
    """A Condition whose codes name no value set, read by its words (decision 29): the risk-factor and
    contraindication value sets its text affirms (``data/text_findings.yaml``, negation-aware)."""
    text = condition_text(res)
    found = text_findings(text)
    if not found:
        return None
    return _read_one(res, term, v, birth, ConceptMatch(frozenset(found), (), None, text))


# ------------------------------------------------------------------------------ neurosarcoidosis (B1)


def ns_kind(c: _Read) -> str | None:
    """The neurosarcoidosis manifestation a Condition records, or None (knowledge §2.2)."""
    names = c.m.names
    if "ns.specific" in names or "ns.neuromuscular" in names:
        return ("meningitis" if "ns.meningitis" in names else "cranial" if "ns.cranial" in names
                else "neuromuscular" if "ns.neuromuscular" in names else "ns")
    if "neuro.sfn" in names or ("neuro.sfn-proxy" in names and _sfn_evidence(c.res, c.m)):
        return "sfn"
    if "ns.manifestation" in names:
        return ("myelopathy" if "ns.myelopathy" in names else "cranial" if "ns.cranial" in names
                else "neuropathy" if "G63" in _icd_families(c.res) else "manifestation")
    if "sarcoidosis" in names and _neuro_site(c.res):
        return "ns"  # a coded nervous-system body site (B1); text alone is at most possible NS (decision 47)
    return None


def named_in_text_only(c: _Read) -> bool:
    """Decision 47: a sarcoidosis Condition whose text affirms (does not deny) nervous-system involvement."""
    return "sarcoidosis" in c.m.names and affirmed(c.m.text or "", _NEURO_SITE_RE)


def late_manifestation(c: _Read, sarcoid_onset: datetime | None) -> str:
    """Decision 48: "ns" when the finding began on or after the sarcoidosis onset or its text links it to
    sarcoidosis; "possible" when it has no date (A16); "" when it predates the sarcoidosis."""
    if affirmed(c.m.text or "", _SARCOID_WORD_RE):
        return "ns"
    when = c.when
    if when is None or sarcoid_onset is None:
        return "possible"
    return "ns" if when >= sarcoid_onset else ""


def needs_sarcoidosis(kind: str, m: ConceptMatch) -> bool:
    """B1: a manifestation code counts only next to a sarcoidosis code (idiopathic SFN is no indication)."""
    return kind in ("sfn", "manifestation", "neuropathy", "myelopathy") or (
        kind == "cranial" and "ns.specific" not in m.names)


def _is_bulbar(names: frozenset[str] | set[str]) -> bool:
    return "neuro.bulbar" in names and "neuro.bulbar-exclusion" not in names


def _add_neurosarcoidosis(part: ConditionsPart, read: list[_Read], term: Terminology) -> None:
    sarcoid_any = any("sarcoidosis" in c.m.names and c.active for c in read)
    sarcoid_dates = [d for d in (c.when for c in read if "sarcoidosis" in c.m.names) if d is not None]
    sarcoid_onset = min(sarcoid_dates) if sarcoid_dates else None
    neuro_other: list[_Read] = []
    text_only: list[_Read] = []
    for c in read:
        names = c.m.names
        kind = ns_kind(c)
        late = kind is None and "ns.late-manifestation" in names and sarcoid_any
        if late:
            placed = late_manifestation(c, sarcoid_onset)
            kind = ("myelopathy" if "ns.myelopathy" in names else "manifestation") if placed == "ns" else None
            if placed == "possible":
                neuro_other.append(c)
        elif kind is None and named_in_text_only(c):
            text_only.append(c)
        if late and kind is None:
            pass  # decision 48: began before the sarcoidosis (unrelated) or undated (possible, above)
        elif kind is not None:
            if needs_sarcoidosis(kind, c.m) and not sarcoid_any:
                continue
            nc = ns_condition(kind, c.res, c.clin, c.verification, c.m, term, c.birth, c.dated)
            part.ns_conditions.append(nc)
            if nc.reference:
                part.ns_references.add(nc.reference)
            if kind == "sfn":
                part.sfn.append(nc)
            if c.clin in ("recurrence", "relapse"):
                part.relapses.append(nc)
        elif "neuro.other" in names or "neuro.conduction-block" in names or "neuro.sfn-proxy" in names \
                or _is_bulbar(names):
            neuro_other.append(c)
        if sarcoid_any and "neuro.conduction-block" in names:
            part.conduction_block.append(ns_condition("conduction-block", c.res, c.clin, c.verification, c.m, term,
                                                      c.birth, c.dated))
        if sarcoid_any and _is_bulbar(names):
            part.bulbar.append(ns_condition("bulbar", c.res, c.clin, c.verification, c.m, term, c.birth, c.dated))
    if sarcoid_any:
        for c in neuro_other:
            nc = ns_condition("possible", c.res, c.clin, c.verification, c.m, term, c.birth, c.dated)
            if nc.active:
                part.possible_ns.append(nc)
    for c in text_only:
        nc = ns_condition("possible", c.res, c.clin, c.verification, c.m, term, c.birth, c.dated)
        nc.from_text = True
        if nc.active:
            part.possible_ns.append(nc)
    part.ns_status, part.ns_in_remission = ns_status(part.ns_conditions, part.possible_ns)
    dates = [c.date for c in part.ns_conditions if c.date]
    part.ns_onset = min(dates) if dates else None


def ns_status(ns_conditions: list[NSCondition], possible: list[NSCondition]) -> tuple[str, bool]:
    """(status, in remission): any active non-refuted record wins (B1, A15); suspected / possible (A16)."""
    active = [c for c in ns_conditions if c.active]
    if any(c.verification == "confirmed" for c in active):
        return "active", False
    if active:
        return "suspected", False
    if possible:
        return "possible", False
    if ns_conditions:
        return "history", any(c.clinical_status == "remission" for c in ns_conditions)
    return "none", False


def ns_condition(kind: str, res: dict[str, Any], clin: str, verification: str, m: ConceptMatch | None,
                 term: Terminology, birth: datetime | None = None, dated: ConditionDate | None = None) -> NSCondition:
    """``dated``: the Condition's date (decision 24) when the caller has it already."""
    code = res.get("code")
    dated = dated or condition_date(res, birth)  # decision 24
    return NSCondition(kind, label_of(code, m or term.match(code)), ref_of(res), clin, verification,
                       dated.when, parse_dt(res.get("recordedDate")),
                       "" if dated.source == "onsetDateTime" else dated.source)


def _neuro_site(res: dict[str, Any]) -> bool:
    """A coded body site in the nervous system, its text not denying it (decision 47)."""
    return any(isinstance(site, dict) and site.get("coding") and affirmed(concept_text(site), _NEURO_SITE_RE)
               for site in listify(res.get("bodySite")))


def _sfn_evidence(res: dict[str, Any], m: ConceptMatch) -> bool:
    texts = [m.text]
    for n in listify(res.get("note")):
        if isinstance(n, dict) and isinstance(n.get("text"), str):
            texts.append(n["text"])
    for ev in listify(res.get("evidence")):
        if isinstance(ev, dict):
            texts += [concept_text(c) for c in listify(ev.get("code"))]
            texts += [d["display"] for d in listify(ev.get("detail"))
                      if isinstance(d, dict) and isinstance(d.get("display"), str)]
    return any(t and _SFN_EVIDENCE_RE.search(t) for t in texts)


def _icd_families(res: dict[str, Any]) -> set[str]:
    return {c[:3] for c in concept_codes(res.get("code"), "ICD10")}


# ------------------------------------------------------------------------------ risk factors (data)


@lru(maxsize=4096)
def factor_lists(names: frozenset[str]) -> tuple[tuple[int, ...], tuple[criteria.Contraindication, ...]]:
    """(risk factors, contraindications) the value sets ``names`` give, each in file order; memoised by the
    names (a Condition's value sets), as the criteria are loaded once."""
    index = criteria.risk_factor_index()
    factors = sorted({i for cat in names if cat in index for i in index[cat]})  # file order, each once
    contra = criteria.contraindication_categories()
    contras = [ci for cat in names if cat in contra for ci in contra[cat]]
    contras.sort(key=criteria.contraindications().index)  # file order
    return tuple(factors), tuple(contras)


def _add_risk_factors(part: ConditionsPart, c: _Read, ref: str | None, *, from_text: bool = False) -> None:
    """The factors ``criteria/risk_factors.yaml`` and ``criteria/contraindications.yaml`` give this Condition
    (one read from text only says so in its label, decision 29)."""
    n = c.m.names
    factors, all_contras = factor_lists(n)
    contras = all_contras if c.active else ()
    if not (factors or contras or n & _INTOLERANCE_OR_ANAPHYLAXIS):
        return
    said = f" {FROM_TEXT}" if from_text else ""  # decision 29: a factor read from text says so
    label = label_of(c.res.get("code"), c.m) + said
    onset = c.when  # decision 24
    when = f" since {onset.date().isoformat()}" if onset else ""
    detail = f"{label} ({c.clin}{when})"
    if "drug.anaphylaxis" in n:
        part.anaphylaxis.append((onset, FactRef("Anaphylaxis to a correctly given drug", detail, ref)))
    if "gc.intolerance" in n:  # B3 intolerance evidence, dated
        part.gc_intolerance.append(NSCondition("gc-intolerance", label, ref, c.clin, "confirmed", onset, None))
    if "is.intolerance" in n:
        part.is_intolerance.append(NSCondition("is-intolerance", label, ref, c.clin, "confirmed", onset, None))
    every = criteria.risk_factors()
    for i in factors:
        rf = every[i]
        if not (rf.when_inactive or c.active):
            continue
        target = getattr(part, rf.feeds)
        key, name = rf.key, rf.label
        if rf.active_as and thrombosis_is_active(concept_codes(c.res.get("code"), "ICD10"),
                                                 concept_codes(c.res.get("code"), "SNOMED"),
                                                 concept_text(c.res.get("code")), c.clin):
            key, name = rf.active_as  # decision 38: still active, not a past event
        name += said
        target.append(Factor(key, name, ref, detail, label) if key else FactRef(name, detail, ref))
        if rf.also:
            getattr(part, rf.also).append(FactRef(rf.label, detail, ref))
    for ci in contras:
        part.contraindications.append(Factor(ci.key, ci.label + said, ref, f"{detail}; affects {ci.affects}"))
