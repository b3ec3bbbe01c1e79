"""From a patient's FHIR record to a :class:`~cds_service.timeline.model.Timeline`, through the engine's readers.

Nothing here reads FHIR itself: medication records become exposures, Conditions become neurological
events, and Observations become lab values exactly as the clinical engine reads them for its cards
(drug classes, prednisone-equivalent and weekly methotrexate doses, stop reasons, routes, units and
plausibility). So when the readers learn to read a chart better, the timeline follows. This module only
places what they read on a time axis, groups infusions into courses, and adds the thresholds the rules use.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from cds_service.clinical.facts import Exposure, LabValue, NSCondition, build_facts, fmt, kdigo_aki, parse_dt, ref_of
from cds_service.clinical.record import PatientRecord
from cds_service.clinical.terminology import ANTI_TNF, GC, IG, RITUXIMAB, SECOND_LINE
from cds_service.clinical.thresholds import Thresholds, get_thresholds
from cds_service.timeline.model import Course, Focus, Lane, Marker, Point, Segment, Series, Threshold, Timeline

# drug class -> lane title; the ladder's lanes and immune globulin are always drawn, rituximab when recorded
LANES: tuple[tuple[str, str, bool], ...] = (
    (GC, "Glucocorticoids", True),
    (SECOND_LINE, "Second-line agents", True),
    (ANTI_TNF, "Anti-TNF", True),
    (RITUXIMAB, "Rituximab", False),
    (IG, "Immune globulin", True),
)
UNKNOWN_END_DAYS = 30  # a past record without an end is drawn this long, with a dashed edge
COURSE_GAP_DAYS = 3  # infusions closer than this belong to one course
AFTER_COURSE_DAYS = 14  # creatinine this many days after a course counts as "after"
LAB_KINDS = ("creatinine", "egfr", "weight")


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


# ------------------------------------------------------------------------------------------- medications
def _amount(e: Exposure) -> float | None:
    if e.drug_class == GC:
        return e.pred_eq_mg
    return e.weekly_mg if e.weekly_mg is not None else e.dose_mg


def _dose(e: Exposure) -> str:
    if e.drug_class == GC and e.pred_eq_mg is not None:
        text = f"{fmt(e.pred_eq_mg)} mg/day prednisone-eq."
        return f"IV pulse, {text}" if e.pulse else text
    if e.weekly_mg is not None:
        return f"{fmt(e.weekly_mg)} mg/week"
    if e.dose_mg is not None:
        return f"{fmt(e.dose_mg / 1000)} g" if e.drug_class == IG else f"{fmt(e.dose_mg)} mg"
    return ""


def segment_of(e: Exposure, today: date) -> Segment | None:
    """One exposure on the axis, or None when it has no start date (it is counted in the notes)."""
    start = _day(e.start)
    if start is None:
        return None
    infusion = e.resource_type == "MedicationAdministration"
    end = _day(e.end)
    ongoing = e.current and not infusion and (end is None or end >= today)
    end_known = end is not None or ongoing or infusion
    if infusion:
        end = start
    elif end is None:
        end = today if ongoing else min(start + timedelta(days=UNKNOWN_END_DAYS), max(today, start))
    return Segment(start=start, end=max(end, start), drug=e.label, dose=_dose(e), amount=_amount(e), ongoing=ongoing,
                   end_known=end_known, stop_reason=e.stop_reason, stop_text=e.stop_text, infusion=infusion,
                   reference=e.reference, source=e.resource_type)


def lanes_of(exposures: dict[str, list[Exposure]], today: date, th: Thresholds) -> tuple[list[Lane], int]:
    lanes, undated = [], 0
    for key, title, always in LANES:
        found = exposures.get(key, [])
        segments = [s for s in (segment_of(e, today) for e in found) if s is not None]
        undated += len(found) - len(segments)
        if segments or always:
            lanes.append(Lane(key, title, segments, _lane_thresholds(key, th)))
    return lanes, undated


def _lane_thresholds(key: str, th: Thresholds) -> list[Threshold]:
    if key == GC:
        return [Threshold(th.gc_high_dose_mg, f"{fmt(th.gc_high_dose_mg)} mg/day: a high-dose trial "
                                              f"(gc_high_dose_mg)", "info"),
                Threshold(th.gc_pulse_mg, f"IV {fmt(th.gc_pulse_mg)} mg or more: a pulse (gc_pulse_mg)", "info")]
    if key == SECOND_LINE:
        return [Threshold(th.mtx_subtherapeutic_mg_week, f"methotrexate below {fmt(th.mtx_subtherapeutic_mg_week)} "
                                                         f"mg/week: subtherapeutic (mtx_subtherapeutic_mg_week)",
                          "info")]
    return []


# ------------------------------------------------------------------------------------------- events
def markers_of(relapses: list[NSCondition], manifestations: list[NSCondition]) -> tuple[list[Marker], int]:
    """Relapses at their relapse date (and the first onset, when it is recorded apart), other neurological
    manifestations at their onset; each Condition once. Also: how many had no date."""
    out: dict[tuple[date, str, str], Marker] = {}
    undated, seen = 0, set()
    for c in relapses:
        seen.add(c.reference)
        when = _day(c.relapse_date)
        if when is None:
            undated += 1
            continue
        out.setdefault((when, "relapse", c.reference or c.label), Marker(when, "relapse", c.label, c.reference))
        onset = _day(c.onset)
        if onset is not None and onset < when:
            out.setdefault((onset, "manifestation", c.reference or c.label),
                           Marker(onset, "manifestation", c.label, c.reference))
    for c in manifestations:
        if c.reference is not None and c.reference in seen:
            continue
        seen.add(c.reference)
        when = _day(c.date)
        if when is None:
            undated += 1
            continue
        out.setdefault((when, "manifestation", c.reference or c.label),
                       Marker(when, "manifestation", c.label, c.reference))
    return sorted(out.values(), key=lambda m: (m.when, m.kind)), undated


# ------------------------------------------------------------------------------------------- results
def lab_values(record: PatientRecord, th: Thresholds) -> dict[str, list[LabValue]]:
    """Every creatinine, eGFR and weight result, as the engine's observation reader reads each one (units
    converted, implausible values refused): the reader is asked about one Observation at a time, on its date."""
    out: dict[str, list[LabValue]] = {k: [] for k in LAB_KINDS}
    computed: list[LabValue] = []
    for obs in record.of_type("Observation"):
        if not isinstance(obs, dict):
            continue
        when = parse_dt(obs.get("effectiveDateTime")) or parse_dt(obs.get("issued"))
        if when is None:
            continue
        one = PatientRecord(patient_id=record.patient_id, patient=record.patient, now=when + timedelta(minutes=1))
        one.add(obs)
        facts = build_facts(one, th)
        ref = ref_of(obs)
        for kind, value in (("creatinine", facts.creatinine), ("egfr", facts.egfr), ("weight", facts.weight)):
            if value is None or value.when is None:
                continue
            if kind == "egfr" and value.computed:
                computed.append(value)
            elif value.reference == ref:
                out[kind].append(value)
    if not out["egfr"]:  # no eGFR recorded: the one the rules compute from each creatinine (CKD-EPI 2021)
        out["egfr"] = computed
    return out


def _point(v: LabValue) -> Point:
    fact = v.fact().value
    shown = fact.rsplit(" on ", 1)[0] if " on " in fact else fact
    if v.computed:
        shown += " (computed from creatinine)"
    assert v.when is not None
    return Point(v.when.date(), v.value, shown, v.reference)


def series_of(values: dict[str, list[LabValue]], height_m: float | None, th: Thresholds) -> list[Series]:
    creatinine = Series("creatinine", "Creatinine", "mg/dL", [_point(v) for v in values["creatinine"]], min_span=1.0)
    egfr = Series("egfr", "eGFR", "mL/min/1.73 m2", [_point(v) for v in values["egfr"]], [
        Threshold(th.egfr_warning, f"eGFR below {fmt(th.egfr_warning)}: renal warning on IVIG orders (egfr_warning)",
                  "warning", f"{fmt(th.egfr_warning)} warning"),
        Threshold(th.egfr_critical, f"eGFR below {fmt(th.egfr_critical)}: renal critical on IVIG orders "
                                    f"(egfr_critical)", "critical", f"{fmt(th.egfr_critical)} critical")], min_span=40)
    weight = Series("weight", "Weight", "kg", [_point(v) for v in values["weight"]], min_span=20)
    if height_m and th.use_adjusted_weight:
        limit = th.adjusted_weight_bmi * height_m * height_m
        weight.thresholds.append(Threshold(round(limit, 1), f"{fmt(limit)} kg is BMI {fmt(th.adjusted_weight_bmi)} at "
                                                            f"this height: IVIG is dosed by adjusted weight above it "
                                                            f"(adjusted_weight_bmi)", "info",
                                           f"BMI {fmt(th.adjusted_weight_bmi)}"))
    return [creatinine, egfr, weight]


def _height_m(record: PatientRecord, th: Thresholds) -> float | None:
    height = build_facts(record, th).height
    return height.value / 100 if height is not None and height.unit == "cm" else None


# ------------------------------------------------------------------------------------------- IVIG courses
def courses_of(lane: Lane | None, creatinine: list[LabValue], th: Thresholds) -> list[Course]:
    """Immune globulin given on days close together is one course; a prescription's span is one course."""
    if lane is None:
        return []
    spans: list[tuple[date, date, int, str]] = []
    for seg in sorted(lane.segments, key=lambda s: s.start):
        if spans and seg.infusion and (seg.start - spans[-1][1]).days < COURSE_GAP_DAYS:
            start, end, n, dose = spans[-1]
            spans[-1] = (start, max(end, seg.end), n + 1, dose or seg.dose)
        elif spans and not seg.infusion and seg.start <= spans[-1][1]:
            start, end, n, dose = spans[-1]
            spans[-1] = (start, max(end, seg.end), n, dose or seg.dose)
        else:
            spans.append((seg.start, seg.end, 1 if seg.infusion else 0, seg.dose))
    return [_course(start, end, n, dose, creatinine, th) for start, end, n, dose in spans]


def _course(start: date, end: date, infusions: int, dose: str, creatinine: list[LabValue], th: Thresholds) -> Course:
    dated = sorted((v for v in creatinine if v.when is not None), key=lambda v: v.when)  # type: ignore[arg-type, return-value]
    # before: the last result up to the first day (drawn before the first infusion); after: the highest result
    # from the last day to two weeks later
    before = [v for v in dated if start - timedelta(days=th.lab_recency_days) <= v.when.date() <= start]
    after = [v for v in dated
             if v.when.date() > start and end <= v.when.date() <= end + timedelta(days=AFTER_COURSE_DAYS)]
    first_before = before[-1] if before else None
    worst_after = max(after, key=lambda v: v.value) if after else None
    rise = ""
    if first_before is not None and worst_after is not None:
        window = [v for v in dated if v.when <= worst_after.when]
        aki = kdigo_aki(list(reversed(window)), th)
        ratio = worst_after.value / first_before.value if first_before.value else 0
        rise = (f"{fmt(first_before.value, 2)} -> {fmt(worst_after.value, 2)} mg/dL (x{fmt(ratio, 2)})"
                + (f"; meets the KDIGO creatinine criterion ({aki.detail})" if aki is not None else ""))
    return Course(start, end, infusions, dose, _point(first_before) if first_before else None,
                  _point(worst_after) if worst_after else None, rise)


# ------------------------------------------------------------------------------------------- whole
def build_timeline(record: PatientRecord, *, today: date, focus: Focus | None = None,
                   notes: list[str] | None = None, thresholds: Thresholds | None = None) -> Timeline:
    th = thresholds or get_thresholds()
    record.now = datetime.combine(today, datetime.min.time()).replace(tzinfo=record.now.tzinfo) + timedelta(hours=12)
    facts = build_facts(record, th)
    lanes, undated_meds = lanes_of(facts.exposures, today, th)
    manifestations = [*facts.ns_conditions, *facts.sfn, *facts.conduction_block, *facts.bulbar, *facts.possible_ns]
    markers, undated_events = markers_of(facts.relapses, manifestations)
    values = lab_values(record, th)
    series = series_of(values, _height_m(record, th), th)
    courses = courses_of(next((lane for lane in lanes if lane.key == IG), None), values["creatinine"], th)
    out_notes = list(notes or [])
    if undated_meds:
        out_notes.append(f"{undated_meds} medication records have no date and are not drawn.")
    if undated_events:
        out_notes.append(f"{undated_events} neurological Conditions have no onset or recorded date and are not drawn.")
    out_notes.extend(facts.unit_problems)
    out_notes.extend(n for n in facts.notes if n not in out_notes)
    dates = [s.start for lane in lanes for s in lane.segments] + [s.end for lane in lanes for s in lane.segments]
    dates += [m.when for m in markers] + [p.when for s in series for p in s.points]
    start = min(dates, default=today - timedelta(days=365))
    end = max([today, *dates])
    pad = timedelta(days=max(7, (end - start).days // 50))
    return Timeline(start=start - pad, end=end + pad, today=today, lanes=lanes, markers=markers, series=series,
                    courses=courses, focus=focus, notes=list(dict.fromkeys(out_notes)))

