"""The treatment timeline as data: what is drawn, independent of FHIR and of SVG.

:mod:`cds_service.timeline.normalise` fills it from the clinical engine's readers; :mod:`.drawing` draws it;
:mod:`.page` puts the drawing, the data table and the notes on one page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class Segment:
    """One medication record on a lane: a course (a span) or a single infusion (one day)."""

    start: date
    end: date  # the last day drawn (today for a course still running)
    drug: str  # as recorded ("Prednisone 20 mg oral tablet")
    dose: str = ""  # as the rules read it ("40 mg/day prednisone-equivalent", "15 mg/week", "0.4 g/kg")
    amount: float | None = None  # the dose as one comparable number (mg/day, mg/week): the bar's height
    ongoing: bool = False
    end_known: bool = True
    stop_reason: str | None = None  # ineffective | intolerance | other
    stop_text: str = ""
    infusion: bool = False
    reference: str | None = None
    source: str = ""  # the FHIR resource type: MedicationStatement, MedicationRequest, ...


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str  # "eGFR below 60: renal warning on IVIG orders (egfr_warning)"
    severity: str = "warning"  # warning | critical | info
    short: str = ""  # beside the line: "60 warning", "BMI 30"


@dataclass
class Lane:
    key: str  # the engine's drug class
    title: str
    segments: list[Segment] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)  # dose lines the rules use, said under the lane


@dataclass(frozen=True)
class Marker:
    when: date
    kind: str  # manifestation | relapse
    label: str
    reference: str | None = None


@dataclass(frozen=True)
class Point:
    when: date
    value: float
    shown: str  # "1.4 mg/dL (recorded 124 umol/L)"
    reference: str | None = None


@dataclass
class Series:
    key: str  # creatinine | egfr | weight
    title: str
    unit: str
    points: list[Point] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    min_span: float = 0.0  # the scale covers at least this much (in ``unit``), so small wobbles stay small


@dataclass(frozen=True)
class Course:
    """Immune globulin given on consecutive days (or one order's span), with creatinine around it."""

    start: date
    end: date
    infusions: int
    dose: str = ""
    creatinine_before: Point | None = None
    creatinine_after: Point | None = None
    rise: str = ""  # "creatinine 1.1 -> 1.9 mg/dL (x1.7): meets the KDIGO ratio 1.5" or ""


@dataclass
class Focus:
    """The card that launched the timeline (a validated ``appContext``) and what it asks the reader to look at."""

    rule_id: str
    title: str
    sections: tuple[str, ...]  # lane keys and series keys to highlight


@dataclass
class Timeline:
    start: date
    end: date  # today, or the last event when that is later
    today: date
    lanes: list[Lane] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    courses: list[Course] = field(default_factory=list)
    focus: Focus | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read, in plain words

    @property
    def empty(self) -> bool:
        return not (any(lane.segments for lane in self.lanes) or self.markers or any(s.points for s in self.series))
