"""Draw a :class:`~cds_service.timeline.model.Timeline` as one SVG, on the server, without script.

Layout, top to bottom, on one time axis: the years; the events row (new neurological manifestations as
diamonds, relapses as triangles); one lane per drug class (a bar per course with its dose, a dot per
infusion, the stop reason under the bar's end); then the creatinine, eGFR and weight trends, each with
the thresholds the rules use as dashed lines. Immune globulin courses are shaded bands through every
row, so creatinine before and after each course reads straight down. Today is a dashed line.

Shapes and words carry the meaning, not colour alone; every mark has a ``<title>`` (a tooltip and an
accessible name) and the page repeats everything in a table. Styling is presentation attributes only, so
the page's CSP needs no ``'unsafe-inline'``. All text from the record is escaped. The output is
deterministic: the same timeline gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from html import escape

from cds_service.timeline.model import Lane, Marker, Point, Segment, Series, Timeline

WIDTH = 1000
LEFT = 190  # lane and chart titles
RIGHT = 120  # threshold labels
TOP = 34
EVENTS_HEIGHT = 46
ROW_HEIGHT = 26
LANE_PAD = 14
CHART_HEIGHT = 110
CHART_GAP = 26
CHAR_WIDTH = 6.4  # average width of a 11 px sans-serif character, to decide whether a label fits

INK = "#1f2328"
MUTED = "#57606a"
GRID = "#d0d7de"
FOCUS_FILL = "#fff8c5"
COURSE_FILL = "#efe5ff"
LANE_COLOURS = {
    "glucocorticoid": "#9a3412",
    "second-line": "#1d4ed8",
    "anti-tnf": "#047857",
    "rituximab": "#374151",
    "immune-globulin": "#6d28d9",
}
SEVERITY_COLOURS = {"critical": "#b91c1c", "warning": "#9a6700", "info": "#57606a"}
STOP_WORDS = {"ineffective": "stopped: not effective", "intolerance": "stopped: not tolerated",
              "other": "stopped"}


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Axis:
    start: date
    end: date

    @property
    def days(self) -> int:
        return max(1, (self.end - self.start).days)

    def x(self, when: date) -> float:
        span = WIDTH - LEFT - RIGHT
        offset = min(max((when - self.start).days, 0), self.days)
        return LEFT + span * offset / self.days

    def ticks(self) -> list[tuple[date, str]]:
        """Year starts (or quarter starts for a span under two years), with their labels."""
        if self.days < 730:
            out = []
            year, month = self.start.year, ((self.start.month - 1) // 3) * 3 + 1
            while date(year, month, 1) <= self.end:
                d = date(year, month, 1)
                if d >= self.start:
                    out.append((d, d.strftime("%b %Y")))
                month += 3
                if month > 12:
                    year, month = year + 1, 1
            return out
        return [(date(y, 1, 1), str(y)) for y in range(self.start.year + 1, self.end.year + 1)]


def _rows(segments: list[Segment]) -> list[list[Segment]]:
    """Overlapping records of one drug class on separate rows (first row that is free), in date order."""
    rows: list[list[Segment]] = []
    for seg in sorted(segments, key=lambda s: (s.start, s.end)):
        for row in rows:
            if row[-1].end < seg.start:
                row.append(seg)
                break
        else:
            rows.append([seg])
    return rows


def _segment_title(seg: Segment) -> str:
    until = "ongoing" if seg.ongoing else (seg.end.isoformat() if seg.end_known else "end not recorded")
    parts = [f"{seg.drug}: {seg.start.isoformat()} to {until}" if not seg.infusion
             else f"{seg.drug}: infusion on {seg.start.isoformat()}"]
    if seg.dose:
        parts.append(seg.dose)
    if seg.stop_reason:
        parts.append(STOP_WORDS.get(seg.stop_reason, "stopped") + (f" ({seg.stop_text})" if seg.stop_text else ""))
    if seg.reference:
        parts.append(seg.reference)
    return "; ".join(parts)


class _Canvas:
    def __init__(self, timeline: Timeline) -> None:
        self.t = timeline
        self.axis = Axis(timeline.start, timeline.end)
        self.parts: list[str] = []
        self.y = TOP
        self.focus = set(timeline.focus.sections) if timeline.focus else set()

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def text(self, x: float, y: float, words: str, *, size: int = 11, anchor: str = "start", fill: str = INK,
             weight: str = "normal") -> None:
        self.add(f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
                 f'font-weight="{weight}">{_e(words)}</text>')

    def band(self, key: str, height: float) -> None:
        if key in self.focus:
            self.add(f'<rect x="0" y="{_num(self.y)}" width="{WIDTH}" height="{_num(height)}" fill="{FOCUS_FILL}" '
                     f'fill-opacity="0.6" stroke="#bf8700" stroke-width="1"><title>Highlighted: the card that '
                     f'opened this timeline is about this row</title></rect>')

    # ---------------------------------------------------------------------------------------- rows
    def events(self) -> None:
        y0 = self.y
        self.band("events", EVENTS_HEIGHT)
        self.text(8, y0 + 27, "Neurological events", weight="bold")
        for m in sorted(self.t.markers, key=lambda m: (m.when, m.kind)):
            self.marker(m, y0 + 22)
        self.y += EVENTS_HEIGHT

    def marker(self, m: Marker, cy: float) -> None:
        x = self.axis.x(m.when)
        kind = "relapse" if m.kind == "relapse" else "new manifestation"
        title = f"{m.when.isoformat()}: {kind}: {m.label}" + (f" ({m.reference})" if m.reference else "")
        if m.kind == "relapse":
            shape = (f'<path d="M{_num(x)} {_num(cy - 9)} L{_num(x + 9)} {_num(cy + 7)} L{_num(x - 9)} '
                     f'{_num(cy + 7)} Z" fill="#b91c1c" stroke="#ffffff" stroke-width="1"/>')
        else:
            shape = (f'<path d="M{_num(x)} {_num(cy - 9)} L{_num(x + 8)} {_num(cy)} L{_num(x)} {_num(cy + 9)} '
                     f'L{_num(x - 8)} {_num(cy)} Z" fill="#0969da" stroke="#ffffff" stroke-width="1"/>')
        self.add(f'<g class="marker"><title>{_e(title)}</title>{shape}</g>')

    def lane(self, lane: Lane) -> None:
        rows = _rows(lane.segments) or [[]]
        height = LANE_PAD + ROW_HEIGHT * len(rows) + (12 if any(s.stop_reason for s in lane.segments) else 0)
        y0 = self.y
        self.band(lane.key, height)
        colour = LANE_COLOURS.get(lane.key, "#374151")
        self.text(8, y0 + 22, lane.title, weight="bold")
        if not lane.segments:
            self.text(LEFT + 4, y0 + 22, "none recorded", fill=MUTED)
        most = max((s.amount for s in lane.segments if s.amount and not s.infusion), default=None)
        for i, row in enumerate(rows):
            top = y0 + LANE_PAD / 2 + i * ROW_HEIGHT
            for seg in row:
                self.segment(seg, top, colour, most)
        self.add(f'<line x1="0" y1="{_num(y0 + height)}" x2="{WIDTH}" y2="{_num(y0 + height)}" stroke="{GRID}" '
                 f'stroke-width="1"/>')
        self.y += height

    def segment(self, seg: Segment, top: float, colour: str, most: float | None = None) -> None:
        x1 = self.axis.x(seg.start)
        title = _e(_segment_title(seg))
        if seg.infusion:
            self.add(f'<g class="infusion"><title>{title}</title><circle cx="{_num(x1)}" cy="{_num(top + 9)}" r="5" '
                     f'fill="{colour}" stroke="#ffffff" stroke-width="1"/></g>')
            return
        x2 = max(self.axis.x(seg.end), x1 + 3)
        dash = "" if seg.end_known or seg.ongoing else ' stroke-dasharray="3 2"'
        # the bar's height follows the dose within its lane, so a taper reads as steps down
        height = 18.0 if not (most and seg.amount) else 7 + 11 * min(1.0, seg.amount / most)
        bar_top = top + 18 - height
        body = (f'<rect x="{_num(x1)}" y="{_num(bar_top)}" width="{_num(x2 - x1)}" height="{_num(height)}" rx="2" '
                f'fill="{colour}" stroke="{INK}" stroke-width="0.5"{dash}/>')
        if seg.ongoing:
            body += (f'<path d="M{_num(x2)} {_num(bar_top)} L{_num(x2 + 8)} {_num(bar_top + height / 2)} L{_num(x2)} '
                     f'{_num(top + 18)} Z" fill="{colour}"/>')
        body += self._bar_label(seg, x1, x2, top, height)
        if seg.stop_reason:
            words = STOP_WORDS.get(seg.stop_reason, "stopped")
            body += (f'<text x="{_num(x2)}" y="{_num(top + 30)}" font-size="10" text-anchor="end" fill="{INK}">'
                     f'✕ {_e(words)}</text>')
        self.add(f'<g class="course"><title>{title}</title>{body}</g>')

    @staticmethod
    def _bar_label(seg: Segment, x1: float, x2: float, top: float, height: float) -> str:
        """The dose inside the bar when it fits (white on the bar), else its number above the bar."""
        label = seg.dose or seg.drug
        if height >= 14 and len(label) * CHAR_WIDTH + 8 < x2 - x1:
            return (f'<text x="{_num(x1 + 4)}" y="{_num(top + 14)}" font-size="11" fill="#ffffff">'
                    f'{_e(label)}</text>')
        short = _num(seg.amount) if seg.amount is not None else ""
        if short and len(short) * CHAR_WIDTH + 2 < x2 - x1:
            return (f'<text x="{_num(x1 + 2)}" y="{_num(top + 16 - height)}" font-size="10" fill="{INK}">'
                    f'{_e(short)}</text>')
        return ""

    def chart(self, series: Series) -> None:
        y0 = self.y + CHART_GAP / 2
        self.band(series.key, CHART_HEIGHT + CHART_GAP)
        self.text(8, y0 + 16, series.title, weight="bold")
        self.text(8, y0 + 31, series.unit, fill=MUTED, size=10)
        plot_top, plot_bottom = y0 + 8, y0 + CHART_HEIGHT - 8
        self.add(f'<rect x="{LEFT}" y="{_num(y0)}" width="{WIDTH - LEFT - RIGHT}" height="{CHART_HEIGHT}" '
                 f'fill="none" stroke="{GRID}" stroke-width="1"/>')
        values = [p.value for p in series.points] + [t.value for t in series.thresholds]
        if not series.points:
            self.text(LEFT + 6, y0 + CHART_HEIGHT / 2, "no results recorded", fill=MUTED)
            self.y += CHART_HEIGHT + CHART_GAP
            return
        low, high = min(values), max(values)
        if high - low < series.min_span:  # small wobbles must not look like large changes
            low = max(0.0, high - series.min_span)
            high = low + series.min_span
        pad = (high - low) * 0.1 or max(abs(high) * 0.1, 1.0)
        low, high = max(0.0, low - pad), high + pad

        def y(v: float) -> float:
            return plot_bottom - (v - low) / (high - low) * (plot_bottom - plot_top)

        self.text(LEFT - 6, plot_top + 4, _num(high), anchor="end", size=10, fill=MUTED)
        self.text(LEFT - 6, plot_bottom + 4, _num(low), anchor="end", size=10, fill=MUTED)
        for th in series.thresholds:
            ty = y(th.value)
            colour = SEVERITY_COLOURS.get(th.severity, MUTED)
            self.add(f'<g class="threshold"><title>{_e(th.label)}</title><line x1="{LEFT}" y1="{_num(ty)}" '
                     f'x2="{WIDTH - RIGHT}" y2="{_num(ty)}" stroke="{colour}" stroke-width="1.2" '
                     f'stroke-dasharray="6 4"/></g>')
            self.text(WIDTH - RIGHT + 4, ty + 4, th.short or f"{_num(th.value)} {th.severity}", size=10, fill=colour)
        points = sorted(series.points, key=lambda p: p.when)
        if len(points) > 1:
            path = " ".join(f"{_num(self.axis.x(p.when))},{_num(y(p.value))}" for p in points)
            self.add(f'<polyline points="{path}" fill="none" stroke="{INK}" stroke-width="1.5"/>')
        for p in points:
            self.point(p, self.axis.x(p.when), y(p.value), series.title)
        self.y += CHART_HEIGHT + CHART_GAP

    def point(self, p: Point, x: float, y: float, title: str) -> None:
        words = f"{title} {p.shown} on {p.when.isoformat()}" + (f" ({p.reference})" if p.reference else "")
        self.add(f'<g class="point"><title>{_e(words)}</title><circle cx="{_num(x)}" cy="{_num(y)}" r="3.5" '
                 f'fill="#ffffff" stroke="{INK}" stroke-width="1.5"/></g>')

    # ---------------------------------------------------------------------------------------- whole
    def axis_row(self) -> None:
        for d, label in self.axis.ticks():
            self.text(self.axis.x(d), TOP - 12, label, anchor="middle", size=11, fill=MUTED)

    def grid(self, bottom: float) -> None:
        for d, _ in self.axis.ticks():
            x = _num(self.axis.x(d))
            self.parts.insert(0, f'<line x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{_num(bottom)}" stroke="{GRID}" '
                                 f'stroke-width="1"/>')
        for course in self.t.courses:
            x1, x2 = self.axis.x(course.start), self.axis.x(course.end)
            words = f"Immune globulin course {course.start.isoformat()} to {course.end.isoformat()}"
            self.parts.insert(0, f'<g class="ivig-course"><title>{_e(words)}</title><rect x="{_num(x1 - 3)}" '
                                 f'y="{TOP - 6}" width="{_num(max(x2 - x1, 0) + 6)}" height="{_num(bottom - TOP + 6)}" '
                                 f'fill="{COURSE_FILL}"/></g>')
        x = _num(self.axis.x(self.t.today))
        self.add(f'<line x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{_num(bottom)}" stroke="{INK}" stroke-width="1" '
                 f'stroke-dasharray="2 3"/>')
        self.text(self.axis.x(self.t.today), bottom + 14, "today", anchor="middle", size=10, fill=MUTED)


def draw(timeline: Timeline, *, title_id: str = "timeline-title", desc_id: str = "timeline-desc") -> str:
    """The SVG element (a string) for ``timeline``; the page gives it an accessible name and description."""
    c = _Canvas(timeline)
    c.axis_row()
    c.events()
    for lane in timeline.lanes:
        c.lane(lane)
    for series in timeline.series:
        c.chart(series)
    bottom = c.y
    c.grid(bottom)
    height = bottom + 24
    summary = describe(timeline)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {_num(height)}" width="100%" '
            f'role="img" aria-labelledby="{title_id} {desc_id}" font-family="system-ui, sans-serif">'
            f'<title id="{title_id}">Treatment timeline {timeline.start.isoformat()} to {timeline.end.isoformat()}'
            f'</title><desc id="{desc_id}">{_e(summary)}</desc>' + "".join(c.parts) + "</svg>")


def describe(timeline: Timeline) -> str:
    """One sentence per row, for screen readers (the table beside the picture has every value)."""
    parts = []
    relapses = sum(1 for m in timeline.markers if m.kind == "relapse")
    parts.append(f"{len(timeline.markers) - relapses} new neurological manifestations and {relapses} relapses.")
    for lane in timeline.lanes:
        courses = [s for s in lane.segments if not s.infusion]
        infusions = len(lane.segments) - len(courses)
        parts.append(f"{lane.title}: {len(courses)} courses" + (f", {infusions} infusions" if infusions else "") + ".")
    for series in timeline.series:
        if series.points:
            last = max(series.points, key=lambda p: p.when)
            parts.append(f"{series.title}: {len(series.points)} results, latest {last.shown} on "
                         f"{last.when.isoformat()}.")
    if timeline.courses:
        parts.append(f"{len(timeline.courses)} immune globulin courses shaded.")
    return " ".join(parts)
