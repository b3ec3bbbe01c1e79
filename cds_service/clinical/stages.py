"""Treatment stage S0-S7 (incl. S2b, S3R, S3I) per knowledge §4.2 with decisions 4-5.

Gate S0 first, then the first predicate from S7 down to S1 that holds is the stage (the highest tier
reached wins). Minimum trials (decision 5) decide when continued disease (B4) counts against a drug.
Every predicate that placed the patient is returned as :class:`~cds_service.clinical.facts.FactRef` evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .facts import Exposure, FactRef, Facts, NSCondition, fmt
from .terminology import ANTI_TNF, GC, IG, LADDER_TIER, RITUXIMAB, SECOND_LINE
from .thresholds import Thresholds
from .trials import acting_until, counts_against, diagnosis_references, ended_before_onset, ns_period_start


@dataclass(frozen=True)
class Rung:
    """One stage of the ladder: the card it shows and the drug tier (terminology.LADDER_TIER) that card
    proposes; decision 6 suppresses the card when a draft order is of that tier or higher."""

    stage: str
    rule_id: str | None
    proposes_tier: int | None = None


# The one table of the ladder's stages (knowledge §4.2, decision 5), lowest first.
RUNGS = (
    Rung("S0", None),
    Rung("S1", "stage.s1-untreated", LADDER_TIER[GC]),
    Rung("S2", "stage.s2-on-gc"),
    Rung("S2b", "stage.s2b-gc-subthreshold"),
    Rung("S3R", "stage.s3r-gc-refractory", LADDER_TIER[SECOND_LINE]),
    Rung("S3I", "stage.s3i-gc-intolerant", LADDER_TIER[SECOND_LINE]),
    Rung("S4", "stage.s4-on-second-line"),
    Rung("S5", "stage.s5-second-line-refractory", LADDER_TIER[ANTI_TNF]),
    Rung("S6", "stage.s6-on-anti-tnf"),
    Rung("S7", "stage.s7-refractory-all", LADDER_TIER[RITUXIMAB]),
)
STAGES = tuple(r.stage for r in RUNGS)
RUNG_OF = {r.stage: r for r in RUNGS}
STAGE_RULES = {r.stage: r.rule_id for r in RUNGS if r.rule_id}


@dataclass
class ClassState:
    drug_class: str
    exposures: list[Exposure] = field(default_factory=list)
    trial_start: datetime | None = None
    acting_end: datetime | None = None  # until when the class answers for disease activity; None = now (44)
    refractory: list[FactRef] = field(default_factory=list)  # B4 evidence after a complete trial
    all_failed: bool = False  # every agent stopped for intolerance / ineffective

    @property
    def ever(self) -> bool:
        return any(e.exposed for e in self.exposures)

    @property
    def current(self) -> list[Exposure]:
        return [e for e in self.exposures if e.current]


@dataclass
class StageResult:
    stage: str
    reasons: list[FactRef] = field(default_factory=list)
    in_scope: bool = False  # ladder scope (adult, NS active/suspected/possible, not SFN-only)
    conditional: bool = False  # suspected / possible NS: conditional wording (A16)
    sfn_pathway: bool = False  # only SFN: IVIG-IND-SFN card, no ladder (knowledge §4.2)
    scope_note: str = ""
    gc: ClassState = field(default_factory=lambda: ClassState(GC))
    second_line: ClassState = field(default_factory=lambda: ClassState(SECOND_LINE))
    anti_tnf: ClassState = field(default_factory=lambda: ClassState(ANTI_TNF))
    gc_max_pred_eq: float | None = None
    gc_pulse: bool = False
    gc_dose_known: bool = False
    gc_trial_days: int | None = None
    gc_intolerance: list[FactRef] = field(default_factory=list)
    gc_dependence: FactRef | None = None
    relapse_after_completed_gc: bool = False
    prior_therapy: bool = False
    mtx_daily: list[FactRef] = field(default_factory=list)  # A9
    mtx_subtherapeutic: list[FactRef] = field(default_factory=list)
    remission: bool = False
    gc_tried: bool = False  # a glucocorticoid trial for NS took place (decision 21)
    earlier_exposure: list[FactRef] = field(default_factory=list)  # ended before NS began (decision 19)
    notes: list[str] = field(default_factory=list)

    @property
    def refractory_to_gc(self) -> bool:
        return self.stage in ("S3R", "S5", "S7")


def _days(a: datetime | None, b: datetime | None) -> int | None:
    if a is None or b is None:
        return None
    return (b - a).days


def _ladder_gc(facts: Facts, th: Thresholds) -> list[Exposure]:
    """GC exposures that count for the ladder (A3 other indications, A4 replacement, A5 route)."""
    out = []
    onset = facts.ns_onset
    for e in facts.of_class(GC):
        if not e.exposed:
            continue
        if e.ingredient == "hydrocortisone":
            if e.reason_replacement or e.daily_mg is None or e.daily_mg <= th.gc_replacement_hydrocortisone_max_mg:
                continue  # A4
        if e.reason_replacement:
            continue
        if ended_before_onset(e.start, e.end, e.current, onset, e.reason_ns):
            continue  # decision 19: earlier exposure, not a neurosarcoidosis trial
        end = e.end or (facts.now if e.current else None)
        length = _days(e.start, end)
        if e.reason_sarcoid or e.pulse:
            out.append(e)
        elif length is not None and length >= th.gc_other_indication_min_days:
            out.append(e)  # A3: a long systemic course while NS is active counts whatever the reason
        elif e.current and e.start is None:
            out.append(e)  # ongoing without dates: assume it is the NS treatment
        elif e.current and e.reason_sarcoid is None and (length is None or length >= 0):
            out.append(e)  # current course without a stated other reason
    return out


def _evidence_after(facts: Facts, t0: datetime | None, min_days: int, label: str,
                    acting_end: datetime | None = None) -> list[FactRef]:
    """B4 items 1-2: relapse / new manifestation dated at least ``min_days`` after ``t0`` (decisions 5 and
    22) while the drug still acted (decision 44). The Conditions that record the diagnosis are never one
    (decision 20)."""
    if t0 is None:
        return []
    out: list[FactRef] = []
    seen: set[str | None] = set(diagnosis_references(facts.ns_conditions))
    cands: list[tuple[NSCondition, bool]] = [(c, True) for c in facts.relapses]  # (condition, a relapse)
    for c in facts.ns_conditions:
        if c.kind != "sfn" and c.onset is not None:
            cands.append((c, c in facts.relapses))
    for c, relapse in cands:
        d = c.relapse_date if relapse else c.onset
        if d is not None and counts_against(d, t0, min_days, acting_end) and c.reference not in seen:
            seen.add(c.reference)
            what = "relapse" if relapse else "new manifestation"
            out.append(FactRef(f"Continued disease on {label} ({what})",
                               f"{c.label}, {d.date().isoformat()} ({(d - t0).days} days after start; "
                               f"minimum trial {min_days} days)", c.reference))
    return out


def _trial_start(exposures: list[Exposure], onset: datetime | None) -> datetime | None:
    """Where the class's neurosarcoidosis trial began: each drug counted from the NS onset on unless given
    for NS (decision 19)."""
    known = [s for s in (ns_period_start(e.start, onset, e.reason_ns) for e in exposures) if s is not None]
    return min(known) if known else None


def _effect_days(e: Exposure, th: Thresholds) -> int:
    """Days an infused drug keeps acting after its last infusion (the settings ``infusion_current_days_*``);
    0 for tablets and injections taken until the day they stop."""
    if e.route != "iv" and e.resource_type != "MedicationAdministration":
        return 0
    if e.ingredient == "cyclophosphamide":
        return th.infusion_current_days_cyclophosphamide
    return {ANTI_TNF: th.infusion_current_days_anti_tnf, IG: th.infusion_current_days_ivig,
            RITUXIMAB: th.infusion_current_days_rituximab}.get(e.drug_class or "", 0)


def _acting_end(exposures: list[Exposure], th: Thresholds) -> datetime | None:
    """Until when a class answers for disease activity (decision 44): None while any of it is given (or a
    record has no dates); else the last end plus the effect window of an infused drug."""
    ends = []
    for e in exposures:
        last = e.end or e.start
        if e.current or last is None:
            return None
        ends.append(acting_until(last, False, _effect_days(e, th)))
    return max(d for d in ends if d is not None) if ends else None


def _split_earlier(facts: Facts, exposures: list[Exposure]) -> tuple[list[Exposure], list[FactRef]]:
    """Decision 19: courses over before neurosarcoidosis began, not given for it, are earlier exposure."""
    kept, earlier = [], []
    for e in exposures:
        if ended_before_onset(e.start, e.end, e.current, facts.ns_onset, e.reason_ns):
            earlier.append(FactRef(f"Earlier exposure, before neurosarcoidosis began: {e.label}", e.fact().value,
                                   e.reference))
        else:
            kept.append(e)
    return kept, earlier


def _ineffective(exposures: list[Exposure], label: str) -> list[FactRef]:
    return [FactRef(f"{label} stopped as ineffective", e.stop_text or e.label, e.reference)
            for e in exposures if e.stop_reason == "ineffective"]


# ------------------------------------------------------------------------------ the ladder, read as the ladder
# Gate S0 first (scope, decision 1); then the first rung from S7 down to S1 whose predicate holds is the
# stage (the highest tier reached wins, decision 5). Each predicate returns the facts that place the
# patient on its rung, or None.


@dataclass
class _Course:
    """What the predicates read: the stage result being built and the high-dose glucocorticoid courses."""

    r: StageResult
    high: list[Exposure]


def refractory_to_all(c: _Course) -> list[FactRef] | None:
    """S7: continued disease on anti-TNF after its minimum trial, or every agent stopped (decision 5), once
    every lower rung was tried (decision 21)."""
    at = c.r.anti_tnf
    if at.ever and (at.refractory or at.all_failed) and c.r.gc_tried and c.r.second_line.ever:
        return at.refractory + [e.fact() for e in at.exposures if e.stop_reason]
    return None


def on_anti_tnf(c: _Course) -> list[FactRef] | None:
    """S6: anti-TNF current (decision 5)."""
    return [e.fact() for e in c.r.anti_tnf.current] or None


def refractory_to_second_line(c: _Course) -> list[FactRef] | None:
    """S5: continued disease on a second-line agent after its minimum trial, or all stopped (decision 5),
    after a glucocorticoid trial (decision 21)."""
    sl = c.r.second_line
    if sl.ever and (sl.refractory or sl.all_failed) and c.r.gc_tried:
        return sl.refractory + [e.fact() for e in sl.exposures if e.stop_reason in ("intolerance", "ineffective")]
    return None


def on_second_line(c: _Course) -> list[FactRef] | None:
    """S4: a second-line agent current (decision 5)."""
    return [e.fact() for e in c.r.second_line.current] + c.r.mtx_subtherapeutic if c.r.second_line.current else None


def refractory_to_glucocorticoid(c: _Course) -> list[FactRef] | None:
    """S3R: continued disease after a complete first-line glucocorticoid trial (decisions 4-5, B4)."""
    return c.r.gc.refractory + [e.fact() for e in c.high[:2]] if c.r.gc.refractory else None


def intolerant_of_glucocorticoid(c: _Course) -> list[FactRef] | None:
    """S3I: glucocorticoid stopped for intolerance, an adverse effect after it, or dependence (B3). It is
    tested before S3R and wins when both hold (decision 50); continued disease then joins its facts."""
    if not c.r.gc_intolerance:
        return None
    return list(c.r.gc_intolerance) + c.r.gc.refractory


def on_glucocorticoid(c: _Course) -> list[FactRef] | None:
    """S2 / S2b: glucocorticoid current, at or below the first-line dose (decision 4, A6)."""
    return [e.fact() for e in c.r.gc.current] or None


def untreated(c: _Course) -> list[FactRef] | None:
    """S1: no ladder drug ever recorded (decision 5)."""
    r = c.r
    return [] if not (r.gc.ever or r.second_line.ever or r.anti_tnf.ever) else None


def after_earlier_therapy(c: _Course) -> list[FactRef] | None:
    """S1 (A7): therapy recorded, nothing current and no continued-disease evidence."""
    r = c.r
    return [e.fact() for e in (r.gc.exposures + r.second_line.exposures + r.anti_tnf.exposures)[:3]]


LADDER: tuple[tuple[str, Callable[[_Course], list[FactRef] | None]], ...] = (
    ("S7", refractory_to_all),
    ("S6", on_anti_tnf),
    ("S5", refractory_to_second_line),
    ("S4", on_second_line),
    ("S3I", intolerant_of_glucocorticoid),  # before S3R (decision 50)
    ("S3R", refractory_to_glucocorticoid),
    ("S2", on_glucocorticoid),  # S2b when no course reached the first-line dose (A6: the maximum counts)
    ("S1", untreated),
    ("S1", after_earlier_therapy),
)


def compute_stage(facts: Facts, th: Thresholds) -> StageResult:
    r = StageResult("S0")
    r.mtx_daily = methotrexate_daily(facts)
    if _out_of_scope(facts, th, r):
        return r
    ns_facts = [c.fact() for c in (facts.ns_conditions or facts.possible_ns) if c.active][:3]
    high = _glucocorticoid_course(facts, th, r)
    _second_line_course(facts, th, r)
    _anti_tnf_course(facts, th, r)
    r.gc_tried = r.gc.trial_start is not None or bool(r.gc_intolerance)
    course = _Course(r, high)
    for stage, predicate in LADDER:
        reasons = predicate(course)
        if reasons is not None:
            r.stage = "S2b" if predicate is on_glucocorticoid and not high else stage
            r.prior_therapy = predicate is after_earlier_therapy
            r.reasons = ns_facts + reasons + r.earlier_exposure
            break
    return r


def methotrexate_daily(facts: Facts) -> list[FactRef]:
    """A9: methotrexate recorded or ordered with a daily frequency."""
    out = [FactRef("Methotrexate recorded with a daily frequency", e.label, e.reference)
           for e in facts.of_class(SECOND_LINE) if e.ingredient == "methotrexate" and e.daily_frequency and e.current]
    out += [FactRef("Methotrexate ordered with a daily frequency", o.label, o.reference)
            for o in facts.planned_orders if o.ingredient == "methotrexate" and o.daily_frequency]
    return out


def _out_of_scope(facts: Facts, th: Thresholds, r: StageResult) -> bool:
    """S0 gate (decision 1, A14, A20): paediatric, no neurosarcoidosis, remission, or SFN only. A patient
    in remission on maintenance therapy keeps its rung (S4 / S6)."""
    if facts.age is not None and facts.age < th.adult_age_years:
        r.scope_note = f"age {facts.age} < {th.adult_age_years} (A20: paediatric, out of scope)"
        return True
    if facts.ns_status == "none":
        r.scope_note = "no active neurosarcoidosis (B1)"
        return True
    at_kept, at_earlier = _split_earlier(facts, [e for e in facts.of_class(ANTI_TNF) if e.exposed])
    sl_kept, sl_earlier = _split_earlier(facts, [e for e in facts.of_class(SECOND_LINE) if e.exposed])
    _, gc_earlier = _split_earlier(facts, [e for e in facts.of_class(GC) if e.exposed and not e.reason_replacement
                                           and e.ingredient != "hydrocortisone"])
    r.anti_tnf = ClassState(ANTI_TNF, at_kept)
    r.second_line = ClassState(SECOND_LINE, sl_kept)
    r.gc = ClassState(GC, _ladder_gc(facts, th))
    r.earlier_exposure = gc_earlier + sl_earlier + at_earlier
    at, sl = r.anti_tnf, r.second_line
    if facts.ns_status == "history":  # A14
        r.remission = True
        if facts.ns_in_remission and at.current:
            r.stage, r.in_scope = "S6", True
            r.reasons = [e.fact() for e in at.current] + [c.fact() for c in facts.ns_conditions[:1]]
        elif facts.ns_in_remission and sl.current:
            r.stage, r.in_scope = "S4", True
            r.reasons = [e.fact() for e in sl.current] + [c.fact() for c in facts.ns_conditions[:1]]
        else:
            r.scope_note = "neurosarcoidosis recorded as resolved/inactive (A14)"
        return True
    non_sfn = [c for c in facts.ns_conditions if c.kind != "sfn" and c.active]
    if facts.ns_status in ("active", "suspected") and not non_sfn and facts.sfn:
        r.sfn_pathway = True
        r.scope_note = "small-fibre neuropathy only: SFN pathway, not the GC-MTX-IFX ladder"
        return True
    r.in_scope = True
    r.conditional = facts.ns_status in ("suspected", "possible")
    return False


def _glucocorticoid_course(facts: Facts, th: Thresholds, r: StageResult) -> list[Exposure]:
    """B5: dose summary, trial start, continued disease on it (B4) and intolerance (B3); returns the
    courses at the first-line dose or pulsed (decision 4)."""
    gc = r.gc
    doses = [e.pred_eq_mg for e in gc.exposures if e.pred_eq_mg is not None]
    r.gc_max_pred_eq = max(doses) if doses else None
    r.gc_dose_known = bool(doses)
    r.gc_pulse = any(e.pulse for e in gc.exposures)
    high = [e for e in gc.exposures if e.pulse or (e.pred_eq_mg is not None and e.pred_eq_mg >= th.gc_high_dose_mg)]
    gc.trial_start = _trial_start(high, facts.ns_onset)
    gc.acting_end = _acting_end(gc.exposures, th)
    all_starts = [e.start for e in gc.exposures if e.start]
    gc_first = min(all_starts) if all_starts else None
    if gc_first:
        r.gc_trial_days = (facts.now - gc_first).days if any(e.current for e in gc.exposures) else _days(
            gc_first, max((e.end for e in gc.exposures if e.end), default=None))
    if gc.trial_start is not None:
        gc.refractory = _continued_disease_on_gc(facts, th, gc, high)
    gc.refractory += _ineffective(gc.exposures, "Glucocorticoid")
    r.gc_intolerance = _gc_intolerance(facts, th, r, gc_first)
    r.relapse_after_completed_gc = bool(gc.refractory) and not gc.current and any(
        e.raw_status == "completed" for e in gc.exposures)
    return high


def _continued_disease_on_gc(facts: Facts, th: Thresholds, gc: ClassState, high: list[Exposure]) -> list[FactRef]:
    """B4 against glucocorticoid: relapse / new manifestation at least the minimum trial after the first
    high dose, a pulse included (decision 22: a pulse opens the trial), while it acts (decision 44); a pulse
    after an oral course, relapse on taper (B4.3)."""
    assert gc.trial_start is not None
    out = _evidence_after(facts, gc.trial_start, th.gc_min_trial_days, "glucocorticoid", gc.acting_end)
    oral = [e for e in high if not e.pulse and e.start]
    if oral:
        o0 = min(e.start for e in oral if e.start)
        for e in gc.exposures:
            if e.pulse and e.start and e.start >= o0 + timedelta(days=th.gc_min_trial_days):
                out.append(FactRef("Escalation: IV glucocorticoid pulse after oral course",
                                   e.label + f", {e.start.date().isoformat()}", e.reference))
    return out + _relapse_on_taper(gc.exposures)


def _gc_intolerance(facts: Facts, th: Thresholds, r: StageResult, gc_first: datetime | None) -> list[FactRef]:
    """S3I evidence (B3): a stop for intolerance, an adverse-effect Condition after the first
    glucocorticoid, or dependence (above the dose after the days in the thresholds)."""
    gc = r.gc
    out = [FactRef("Glucocorticoid stopped for intolerance", e.stop_text or e.label, e.reference)
           for e in gc.exposures if e.stop_reason == "intolerance"]
    for c in facts.gc_intolerance:
        if gc_first is None and not gc.exposures:
            continue
        if c.onset is None or gc_first is None or c.onset >= gc_first:
            out.append(FactRef("Glucocorticoid adverse effect", c.label, c.reference))
    cur = [e for e in gc.exposures if e.current and e.current_pred_eq_mg is not None]
    if cur and gc_first and (facts.now - gc_first).days >= th.gc_dependence_after_days:
        latest = max(cur, key=lambda e: e.start or gc_first)
        now_mg = latest.current_pred_eq_mg  # decision 46: the step in force today, not the top of the taper
        if now_mg is not None and now_mg > th.gc_dependence_mg:
            r.gc_dependence = FactRef(
                "Glucocorticoid dependence",
                f"{fmt(now_mg)} mg/day prednisone-equivalent now, after {(facts.now - gc_first).days} days "
                f"(> {fmt(th.gc_dependence_mg)} mg/day after {th.gc_dependence_after_days} days)",
                latest.reference)
            out.append(r.gc_dependence)
    return out


def _second_line_course(facts: Facts, th: Thresholds, r: StageResult) -> None:
    """Trial start (therapeutic doses only), continued disease after its minimum trial, all stopped."""
    sl = r.second_line
    therapeutic = []
    for e in sl.exposures:
        if e.ingredient == "methotrexate" and e.weekly_mg is not None and e.weekly_mg < th.mtx_subtherapeutic_mg_week:
            r.mtx_subtherapeutic.append(FactRef("Methotrexate below the therapeutic range",
                                                f"{fmt(e.weekly_mg)} mg/week (< {fmt(th.mtx_subtherapeutic_mg_week)})",
                                                e.reference))
            continue
        therapeutic.append(e)
    sl.trial_start = _trial_start(therapeutic, facts.ns_onset)
    sl.acting_end = _acting_end(sl.exposures, th)
    sl.refractory = _evidence_after(facts, sl.trial_start, th.second_line_min_trial_days, "second-line agent",
                                    sl.acting_end)
    sl.refractory += _pulse_after(r.gc.exposures, sl.trial_start, th.second_line_min_trial_days, "second-line agent",
                                  sl.acting_end)
    sl.refractory += _ineffective(sl.exposures, "Second-line agent")
    stopped = [e for e in sl.exposures if not e.current]
    sl.all_failed = bool(sl.exposures) and not sl.current and all(
        e.stop_reason in ("intolerance", "ineffective") for e in stopped)


def _anti_tnf_course(facts: Facts, th: Thresholds, r: StageResult) -> None:
    """Trial start, minimum trial (days or infusions), continued disease, all stopped."""
    at = r.anti_tnf
    at.trial_start = _trial_start(at.exposures, facts.ns_onset)
    at.acting_end = _acting_end(at.exposures, th)
    infusions = sorted(e.start for e in at.exposures if e.resource_type == "MedicationAdministration" and e.start)
    min_days = th.anti_tnf_min_trial_days
    if at.trial_start is not None and len(infusions) >= th.anti_tnf_min_infusions:
        min_days = min(min_days, (infusions[th.anti_tnf_min_infusions - 1] - at.trial_start).days)
    at.refractory = _evidence_after(facts, at.trial_start, min_days, "anti-TNF", at.acting_end)
    at.refractory += _pulse_after(r.gc.exposures, at.trial_start, min_days, "anti-TNF", at.acting_end)
    at.refractory += _ineffective(at.exposures, "Anti-TNF")
    at.all_failed = bool(at.exposures) and not at.current and all(
        e.stop_reason in ("intolerance", "ineffective") for e in at.exposures) and r.gc.ever and r.second_line.ever


def _pulse_after(gc_exposures: list[Exposure], t0: datetime | None, min_days: int, label: str,
                 acting_end: datetime | None = None) -> list[FactRef]:
    if t0 is None:
        return []
    return [FactRef(f"Escalation: IV glucocorticoid pulse on {label}", f"{e.label}, {e.start.date().isoformat()}",
                    e.reference)
            for e in gc_exposures if e.pulse and e.start and counts_against(e.start, t0, min_days, acting_end)]


def _relapse_on_taper(exposures: list[Exposure]) -> list[FactRef]:
    """B4.3: a GC dose re-increased to at least twice the tapered dose."""
    seq = sorted((e for e in exposures if e.start and e.pred_eq_mg is not None and not e.pulse),
                 key=lambda e: e.start)  # type: ignore[arg-type,return-value]
    out = []
    peak = None
    low = None
    for e in seq:
        v = e.pred_eq_mg
        assert v is not None
        if peak is None or (low is None and v >= peak):
            peak = v
            continue
        if v < (low if low is not None else peak):
            low = v
            continue
        if low is not None and v >= 2 * low:
            out.append(FactRef("Relapse on taper: glucocorticoid dose re-increased",
                               f"{fmt(low)} -> {fmt(v)} mg/day prednisone-equivalent", e.reference))
            peak, low = v, None
    return out
