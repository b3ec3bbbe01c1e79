"""The timeline page: the SVG, a legend, the same data as tables, and what could not be read.

Plain HTML with no script. Its one stylesheet is inline and allowed by its hash, so the Content-Security-
Policy can start from ``default-src 'none'``. Pages meant for an EHR's iframe carry that EHR's
``frame-ancestors`` (never ``*``), ``Referrer-Policy: no-referrer`` (the URL held the code and state) and
``Cache-Control: no-store``. Every value from the record is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from html import escape

from cds_service.timeline.drawing import STOP_WORDS, draw
from cds_service.timeline.model import Series, Timeline

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, sans-serif; color: #1f2328; background: #ffffff; margin: 0; }
header, main { padding: 0.75rem 1rem; }
header { border-bottom: 1px solid #d0d7de; }
h1 { font-size: 1.3rem; margin: 0 0 0.25rem; }
h2 { font-size: 1.05rem; margin: 1.25rem 0 0.5rem; }
.banner { margin: 0.25rem 0; }
.focus { background: #fff8c5; border: 1px solid #bf8700; padding: 0.5rem 0.75rem; margin: 0.5rem 0; }
.notes { background: #fff1e5; border: 1px solid #bc4c00; padding: 0.5rem 0.75rem; margin: 0.5rem 0; }
.notes ul { margin: 0.25rem 0 0; padding-left: 1.25rem; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr); gap: 1rem; }
@media (min-width: 1500px) { .layout { grid-template-columns: minmax(0, 3fr) minmax(24rem, 2fr); } }
figure { margin: 0; }
.chart { overflow-x: auto; }
.chart svg { min-width: 56rem; display: block; }
figcaption { color: #57606a; font-size: 0.85rem; }
.legend { display: flex; flex-wrap: wrap; gap: 0.5rem 1.25rem; padding: 0; list-style: none; font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.85rem; margin-bottom: 0.75rem; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.4rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.focus-row td { background: #fff8c5; }
.tables { overflow-x: auto; }
.muted { color: #57606a; }
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()


def csp(frame_ancestors: Iterable[str]) -> str:
    ancestors = " ".join(frame_ancestors) or "'none'"
    return (f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'self'; base-uri 'none'; form-action 'none'; "
            f"frame-ancestors {ancestors}")


def headers(frame_ancestors: Iterable[str]) -> dict[str, str]:
    ancestors = tuple(frame_ancestors)
    out = {"Content-Security-Policy": csp(ancestors), "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store", "Pragma": "no-cache", "X-Content-Type-Options": "nosniff"}
    if not ancestors:
        out["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    return out


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _document(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">'
            f'<title>{_e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>')


def message_page(title: str, message: str, hint: str = "") -> str:
    """A page that says why the timeline cannot be shown (no detail that could carry a secret)."""
    extra = f"<p>{_e(hint)}</p>" if hint else ""
    return _document(title, f"<main><h1>{_e(title)}</h1><p>{_e(message)}</p>{extra}</main>")


def _table(caption: str, head: list[str], rows: list[list[str]], focus_rows: set[int] | None = None) -> str:
    if not rows:
        return ""
    ths = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="focus-row"' if focus_rows and i in focus_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>")
    return f"<table><caption>{_e(caption)}</caption><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _treatments(t: Timeline, focus: set[str]) -> str:
    rows, marked = [], set()
    for lane in t.lanes:
        for seg in sorted(lane.segments, key=lambda s: s.start):
            if lane.key in focus:
                marked.add(len(rows))
            until = "ongoing" if seg.ongoing else (seg.end.isoformat() if seg.end_known else "not recorded")
            stop = STOP_WORDS.get(seg.stop_reason, "") if seg.stop_reason else ""
            if stop and seg.stop_text:
                stop += f" ({seg.stop_text})"
            rows.append([lane.title, seg.drug, seg.start.isoformat(), "single infusion" if seg.infusion else until,
                         seg.dose or "not recorded", stop, f"{seg.source} {seg.reference or ''}".strip()])
    return _table("Treatments", ["Class", "Drug", "From", "To", "Dose", "Stopped", "Recorded as"], rows, marked)


def _events(t: Timeline) -> str:
    rows = [[m.when.isoformat(), "relapse" if m.kind == "relapse" else "new manifestation", m.label,
             m.reference or ""] for m in sorted(t.markers, key=lambda m: m.when)]
    return _table("Neurological events", ["Date", "Event", "Condition", "Recorded as"], rows)


def _series_table(s: Series) -> str:
    rows = [[p.when.isoformat(), p.shown, p.reference or ""] for p in sorted(s.points, key=lambda p: p.when)]
    lines = "; ".join(th.label for th in s.thresholds)
    caption = f"{s.title} ({s.unit})" + (f". Lines: {lines}" if lines else "")
    return _table(caption, ["Date", "Result", "Recorded as"], rows)


def _courses(t: Timeline) -> str:
    rows = []
    for c in t.courses:
        before = f"{c.creatinine_before.shown} on {c.creatinine_before.when}" if c.creatinine_before else "none"
        after = f"{c.creatinine_after.shown} on {c.creatinine_after.when}" if c.creatinine_after else "none"
        rows.append([f"{c.start} to {c.end}", str(c.infusions), c.dose or "not recorded", before, after, c.rise])
    return _table("Immune globulin courses and creatinine around them",
                  ["Dates", "Infusions", "Dose", "Creatinine before", "Creatinine after", "Change"], rows)


LEGEND = (
    "<ul class=\"legend\" aria-label=\"Legend\">"
    "<li>◆ blue diamond: new neurological manifestation</li>"
    "<li>▲ red triangle: relapse</li>"
    "<li>bar: a medication record (dose inside when it fits; arrow: ongoing; dashed edge: end not recorded)</li>"
    "<li>● dot: one infusion</li><li>✕ stop reason at the end of a bar</li>"
    "<li>shaded band: immune globulin course</li><li>dashed lines: thresholds the rules use</li>"
    "</ul>"
)


def timeline_page(t: Timeline, *, banner: str = "") -> str:
    focus = set(t.focus.sections) if t.focus else set()
    parts = ["<header><h1>Treatment timeline</h1>"]
    if banner:
        parts.append(f'<p class="banner">{_e(banner)}</p>')
    parts.append(f'<p class="muted">{_e(t.start.isoformat())} to {_e(t.end.isoformat())}, as recorded in the '
                 f'EHR.</p>')
    if t.focus:
        parts.append(f'<p class="focus">Opened from the card <strong>{_e(t.focus.title)}</strong> '
                     f'(<code>{_e(t.focus.rule_id)}</code>): the rows it is about are highlighted.</p>')
    if t.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in t.notes)
        parts.append(f'<section class="notes" aria-labelledby="notes-h"><h2 id="notes-h">What could not be read'
                     f'</h2><ul>{items}</ul></section>')
    parts.append("</header><main>")
    if t.empty:
        parts.append("<p>No neurosarcoidosis treatment, neurological event or tracked result was found in this "
                     "chart.</p>")
    # In a narrow EHR frame the picture keeps a legible size and scrolls sideways (a focusable region).
    figure = (f'<figure><div class="chart" tabindex="0" role="region" aria-label="Timeline picture">{draw(t)}'
              f'</div><figcaption>Each row shares the time axis; hover a mark for its details. The '
              f'tables hold every value shown.</figcaption>{LEGEND}</figure>')
    tables = "".join([_treatments(t, focus), _events(t), *(_series_table(s) for s in t.series), _courses(t)])
    parts.append(f'<div class="layout">{figure}<section class="tables" tabindex="0" '
                 f'aria-label="The timeline as tables">'
                 f'{tables}</section></div></main>')
    return _document("Treatment timeline", "".join(parts))
