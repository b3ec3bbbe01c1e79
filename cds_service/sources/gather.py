"""Gather a hook call's FHIR data: prefetch first, the FHIR server for what is missing, 412 otherwise."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from cds_service.discovery import OPTIONAL_KEYS, PREFETCH
from cds_service.errors import PreconditionFailed
from cds_service.hooks import HookCall
from cds_service.record import PatientRecord
from cds_service.sources.base import SourceError
from cds_service.sources.fhir_server import FhirServerSource, gather_all, next_link
from cds_service.sources.prefetch import PrefetchSource


@dataclass
class GatherStats:
    prefetched: int = 0
    fetched: int = 0
    fhir_requests: int = 0
    fhir_seconds: float = 0.0
    fhir_failed: bool = False


# What a clinician loses when an optional key is missing (said on the cards via the record notes).
_OPTIONAL_MEANING = {
    "allergies": "allergies (prior immune globulin reactions)",
    "medicationAdministrations": "medication administrations (infusion-centre therapy)",
    "devices": "devices (central venous catheters)",
}


def describe_optional(keys) -> str:
    return ", ".join(_OPTIONAL_MEANING.get(k, k) for k in sorted(keys))


_TOKEN = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_.]*)\s*\}\}")
_USER_TOKENS = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
                "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}


def prefetch_queries(context: dict[str, Any], patient_id: str, user_id: str) -> dict[str, str]:
    """The discovery templates with their tokens filled (2.0.1: primitive context fields, user tokens)."""
    # Ids come from the caller: percent-encoded, so "../x" or "1&_include=..." cannot change the query.
    values = {"context.patientId": quote(patient_id, safe="")}  # normalised: no "Patient/" prefix
    rtype, _, rid = user_id.partition("/")
    if rtype in _USER_TOKENS and rid:
        values[_USER_TOKENS[rtype]] = quote(rid, safe="")

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if name.startswith("context."):
            v = context.get(name[8:])
            if isinstance(v, str | int | float | bool):  # only primitive context fields are tokens (2.0.1)
                return quote(str(v), safe="")
        return match.group(0)

    return {key: _TOKEN.sub(fill, template) for key, template in PREFETCH.items()}


def queries_for(call: HookCall) -> dict[str, str]:
    return prefetch_queries(call.body.context, call.patient_id, call.user_id)


async def gather(
    call: HookCall,
    *,
    http: httpx.AsyncClient | None,
    deadline: float,
    max_pages: int = 5,
    max_depth: int = 64,
    max_array: int = 20_000,
    fhir_allowed: Callable[[str], bool] | None = None,
    now: datetime | None = None,
    stats: GatherStats | None = None,
) -> PatientRecord:
    stats = stats or GatherStats()
    queries = queries_for(call)
    prefetch = PrefetchSource(call.body.prefetch)
    values: dict[str, Any] = prefetch.answer(queries)
    stats.prefetched = len(values)
    missing = {k: q for k, q in queries.items() if k not in values and k not in OPTIONAL_KEYS}
    optional = {k: q for k, q in queries.items() if k not in values and k in OPTIONAL_KEYS}
    paged = [v for v in values.values() if isinstance(v, dict) and v.get("resourceType") == "Bundle"
             and next_link(v)]
    record = PatientRecord(patient_id=call.patient_id, notes=list(call.notes))
    if now is not None:
        record.now = now

    if missing or paged or optional:
        server = call.body.fhirServer
        if not server:
            if missing:
                raise PreconditionFailed(
                    "Prefetch data is missing for " + ", ".join(sorted(missing))
                    + " and the request has no fhirServer to fetch it from."
                )
            if paged:
                record.notes.append("prefetch was paginated but no fhirServer was given; later pages not read")
            if optional:
                record.notes.append("not sent by the EHR: " + describe_optional(optional))
        elif fhir_allowed is not None and not fhir_allowed(server):
            raise PreconditionFailed(
                "The fhirServer in the request is not on this service's allow-list for the calling client, "
                "so the missing prefetch data cannot be fetched."
            )
        elif http is None:
            if missing:
                raise PreconditionFailed("Fetching from the FHIR server is not available in this mode.")
        else:
            token = call.body.fhirAuthorization.access_token if call.body.fhirAuthorization else None
            source = FhirServerSource(http, server, token, max_pages=max_pages, max_depth=max_depth,
                                      max_array=max_array)
            started = time.perf_counter()
            # Optional keys run beside the required ones; they may fail or be cut at the deadline.
            optional_tasks = {k: asyncio.ensure_future(source.fetch_one(q)) for k, q in optional.items()}
            try:
                async with asyncio.timeout(deadline):
                    fetched, _ = await gather_all(
                        source.fetch(missing),
                        gather_all(*(source.follow_pages(b) for b in paged)),
                    )
                    if optional_tasks:
                        await asyncio.wait(optional_tasks.values(),
                                           timeout=max(0.0, deadline - (time.perf_counter() - started)))
            except TimeoutError as exc:
                stats.fhir_failed = True
                raise PreconditionFailed(
                    f"The FHIR server did not return the missing prefetch data within {deadline:g} s.",
                    code="timeout",
                ) from exc
            except SourceError as exc:
                stats.fhir_failed = True
                raise PreconditionFailed(f"Could not fetch the missing prefetch data: {exc}.") from exc
            finally:
                for task in optional_tasks.values():
                    if not task.done():
                        task.cancel()
                    elif not task.cancelled():
                        task.exception()  # mark a failure as seen: it is reported as "not available"
                    elif not task.cancelled():
                        task.exception()  # retrieved, so asyncio does not log it (and its URL) later
                stats.fhir_requests = source.requests_made
                stats.fhir_seconds = time.perf_counter() - started
            values.update(fetched)
            unavailable = []
            for key, task in optional_tasks.items():
                if task.done() and not task.cancelled() and task.exception() is None:
                    values[key] = task.result()
                    fetched[key] = task.result()
                else:
                    unavailable.append(key)
            if unavailable:
                record.notes.append("not available from the FHIR server: " + describe_optional(unavailable))
            stats.fetched = len(fetched)
    if prefetch.failed:
        record.notes.append("the EHR reported failed prefetch for " + ", ".join(prefetch.failed))

    for value in values.values():
        if value is not None:
            record.add(value)
    if record.patient is None:
        record.notes.append("no Patient resource was available; age and sex unknown")
    record.draft_orders = call.draft_orders
    record.selections = call.selections
    return record
