"""The timeline for one launch: read the chart with the launch's token, normalise, draw, return the page."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from cds_service.clinical.engine import without_invalid_resources
from cds_service.smart.oauth import TokenResponse
from cds_service.timeline.focus import focus_for
from cds_service.timeline.normalise import build_timeline
from cds_service.timeline.page import timeline_page
from cds_service.timeline.reading import read_chart

LARGE_CHART = 1000  # resources
# LOINC codes the timeline draws: creatinine, eGFR (the codes the engine reads), body weight.
OBSERVATION_CODES = ("2160-0", "38483-4", "98979-8", "98980-6", "62238-1", "88293-6", "88294-4", "94677-2",
                     "50210-4", "77147-7", "48642-3", "48643-1", "50044-7", "70969-1", "69405-9", "33914-3",
                     "29463-7", "3141-9", "3142-7", "8302-2")


def known_rules() -> frozenset[str]:
    from cds_service.clinical.cards import card_library

    return frozenset(k for k in card_library() if not k.startswith("_"))


def banner(patient: dict[str, Any] | None) -> str:
    """The patient banner the EHR asked for (``need_patient_banner``): name, sex, birth date."""
    if not isinstance(patient, dict):
        return "Patient: not available from the EHR."
    names = patient.get("name")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    text = name.get("text") if isinstance(name.get("text"), str) else f"{given} {family}".strip()
    parts = [text or "name not recorded"]
    for key in ("gender", "birthDate"):
        if isinstance(patient.get(key), str):
            parts.append(f"{'born ' if key == 'birthDate' else ''}{patient[key]}")
    return "Patient: " + ", ".join(parts)


async def timeline_html(app, iss: str, token: TokenResponse) -> tuple[str, dict[str, int]]:
    settings = app.state.settings
    deadline = asyncio.get_running_loop().time() + settings.smart_fhir_deadline_seconds
    chart = await read_chart(app.state.http, app.state.fhir_guards, iss, token.access_token, token.patient,
                             token.scope, deadline=deadline, max_pages=settings.fhir_max_pages,
                             max_depth=settings.max_json_depth, max_array=settings.max_array_length,
                             observation_codes=OBSERVATION_CODES)
    today = datetime.now(UTC).date()
    focus = focus_for(token.app_context, known_rules())
    shown = banner(chart.record.patient) if token.need_patient_banner else ""

    def render():
        try:
            timeline = build_timeline(chart.record, today=today, focus=focus, notes=chart.notes)
        except Exception:  # noqa: BLE001 - malformed data the readers' cheap checks let through: as the engine does,
            cleaned = without_invalid_resources(chart.record)  # drop what is not valid FHIR R4 (noted), retry once
            if cleaned is None:
                raise
            timeline = build_timeline(cleaned, today=today, focus=focus, notes=[*chart.notes, *cleaned.notes])
        return timeline, timeline_page(timeline, banner=shown)

    # drawing takes tens of milliseconds for a large chart: drawn off the event loop, so hook calls never wait
    if chart.record.count() > LARGE_CHART:
        timeline, html = await asyncio.to_thread(render)
    else:
        timeline, html = render()
    counts = {"resources": chart.record.count(), "fhir_requests": chart.requests, "notes": len(timeline.notes),
              "other_patient_resources": chart.other_patients, "focus": int(timeline.focus is not None)}
    return html, counts
