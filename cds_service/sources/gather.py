"""Gather a hook call's FHIR data from a list of sources, under one policy.

:func:`call_sources` lists the sources a call may use, in order: what the EHR sent in ``prefetch``, then
its FHIR server (or, when the server is not on the caller's allow-list, a source that says so for every
key). :func:`gather` asks each source in turn for the keys no earlier source settled (answered or known
empty), then applies the :class:`GatherPolicy`: a required key left unsettled is a 412 naming the key
and the reason; an optional key left unsettled is a note on the cards, never a 412.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cds_service.clinical.record import PatientRecord
from cds_service.errors import PreconditionFailed
from cds_service.hooks import HookCall
from cds_service.services import optional_meaning
from cds_service.sources.base import ANSWERED, FAILED, UNAVAILABLE, DataSource, KeyResult, UnavailableSource
from cds_service.sources.fhir_server import FhirServerSource, next_link
from cds_service.sources.origin import OriginGuards
from cds_service.sources.prefetch import PrefetchSource

if TYPE_CHECKING:
    import httpx


@dataclass
class GatherStats:
    prefetched: int = 0
    fetched: int = 0
    fhir_requests: int = 0
    fhir_seconds: float = 0.0
    fhir_failed: bool = False


@dataclass(frozen=True)
class GatherPolicy:
    """What the service needs from the sources and how long it waits for them."""

    deadline_seconds: float = 0.5  # one deadline for every source of a call
    max_pages: int = 5
    max_depth: int = 64
    max_array: int = 20_000

    @classmethod
    def from_settings(cls, settings) -> GatherPolicy:
        return cls(deadline_seconds=settings.fhir_deadline_seconds, max_pages=settings.fhir_max_pages,
                   max_depth=settings.max_json_depth, max_array=settings.max_array_length)


def describe_optional(keys) -> str:
    """What a clinician loses when these optional keys are missing (said on the cards via the record notes)."""
    meaning = optional_meaning()
    return ", ".join(meaning.get(k, k) for k in sorted(keys))


_TOKEN = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_.]*)\s*\}\}")
_PATIENT_TOKEN = "{{context.patientId}}"
_USER_TOKENS = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
                "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}


def prefetch_queries(templates: dict[str, str], context: dict[str, Any], patient_id: str,
                     user_id: str) -> dict[str, str]:
    """The service's prefetch templates with their tokens filled (2.0.1: primitive context fields, user tokens)."""
    # Ids come from the caller: percent-encoded, so "../x" or "1&_include=..." cannot change the query.
    patient = quote(patient_id, safe="")  # normalised: no "Patient/" prefix
    values = {"context.patientId": patient}
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

    queries = {}
    for key, template in templates.items():
        # The one token of the usual template is put in with str.replace: the regex with its Python callback
        # costs about 4,000 instructions more per template (callgrind). When that leaves no "{{", every "{{" of
        # the template belonged to that token, so the regex would fill exactly the same; else the regex fills it.
        query = template.replace(_PATIENT_TOKEN, patient)
        queries[key] = _TOKEN.sub(fill, template) if "{{" in query else query
    return queries


def queries_for(call: HookCall) -> dict[str, str]:
    return prefetch_queries(dict(call.service.prefetch), call.envelope.context, call.patient_id, call.user_id)


def call_sources(call: HookCall, policy: GatherPolicy, http: httpx.AsyncClient,
                 guards: OriginGuards | None = None, fhir_allowed=None) -> list[DataSource]:
    """The sources a hook call from an EHR may use, in the order they are asked. ``fhir_allowed(url)``, when
    given, says whether the calling client may have its fhirServer read."""
    sources: list[DataSource] = [PrefetchSource(call.envelope.prefetch)]
    server = call.envelope.fhir_server
    if not server:
        sources.append(UnavailableSource("no fhirServer", "the request has no fhirServer to fetch it from"))
    elif fhir_allowed is not None and not fhir_allowed(server):
        sources.append(UnavailableSource(
            "fhirServer not allowed", "the fhirServer in the request is not on this service's allow-list for "
            "the calling client"))
    else:
        sources.append(FhirServerSource(http, server, call.envelope.fhir_token, guards=guards,
                                        max_pages=policy.max_pages, max_depth=policy.max_depth,
                                        max_array=policy.max_array))
    return sources


def prefetch_only(call: HookCall) -> list[DataSource]:
    """The sources of a call evaluated from what it carries (``cds-service evaluate``, the preview page)."""
    return [PrefetchSource(call.envelope.prefetch),
            UnavailableSource("no FHIR server", "only the request's prefetch is read here")]


_NO_SOURCE = KeyResult.unavailable("no source has it")


def _paged(result: KeyResult) -> bool:
    value = result.value
    return (result.outcome is ANSWERED and isinstance(value, dict)
            and value.get("resourceType") == "Bundle" and next_link(value) is not None)


async def _ask(source: DataSource, wanted: dict[str, str], paged: list[dict[str, Any]],
               deadline: float) -> tuple[dict[str, KeyResult], list[KeyResult]]:
    """The source's results for the ``wanted`` keys, and for the later pages of the ``paged`` Bundles."""
    if not paged:
        # Awaited directly: a source that answers from memory (prefetch) then finishes without yielding to
        # the event loop, as a task would make it do; calls that yield there interleave under load, with
        # many calls' parsed requests alive at once.
        return await source.fetch(wanted, deadline), []
    answers, pages = await asyncio.gather(source.fetch(wanted, deadline),
                                          asyncio.gather(*(source.more_pages(b, deadline) for b in paged)))
    return answers, list(pages)


async def gather(call: HookCall, sources: Sequence[DataSource], policy: GatherPolicy,
                 stats: GatherStats | None = None) -> PatientRecord:
    """Ask ``sources`` in order for what is still unsettled; every source shares one deadline."""
    stats = stats or GatherStats()
    queries = queries_for(call)
    deadline = asyncio.get_running_loop().time() + policy.deadline_seconds
    results: dict[str, KeyResult] = dict.fromkeys(queries, _NO_SOURCE)
    notes: list[str] = []
    started = time.perf_counter()
    for source in sources:
        wanted = {k: q for k, q in queries.items() if not results[k].settled}
        paged = [k for k, r in results.items() if _paged(r)]
        if wanted or paged:
            if source.remote:  # a one-time set-up (the first call after a start) does not eat the deadline
                loop = asyncio.get_running_loop()
                before = loop.time()
                await source.prepare()
                deadline += loop.time() - before
            answers, pages = await _ask(source, wanted, [results[k].value for k in paged], deadline)
            for key, result in answers.items():
                # a source that merely lacks a key keeps the earlier source's reason (e.g. a failure)
                if result.outcome is not UNAVAILABLE or results[key].outcome is UNAVAILABLE:
                    results[key] = result
            for key, result in zip(paged, pages, strict=True):
                if result.outcome is FAILED and key not in call.service.optional:
                    results[key] = result
                elif not result.settled:
                    notes.append(f"{key}: later pages not read ({result.reason})")
            settled = sum(1 for r in answers.values() if r.settled)
            if source.remote:
                stats.fhir_requests += source.requests_made
                stats.fetched += settled
            else:
                stats.prefetched += settled
        notes.extend(source.notes())
    if stats.fhir_requests:
        stats.fhir_seconds = time.perf_counter() - started
    return _apply_policy(call, results, policy, notes, stats)


def _apply_policy(call: HookCall, results: dict[str, KeyResult], policy: GatherPolicy, notes: list[str],
                  stats: GatherStats) -> PatientRecord:
    required = {k: r for k, r in results.items() if not r.settled and k not in call.service.optional}
    if required:
        stats.fhir_failed = any(r.outcome is FAILED for r in required.values())
        reasons = sorted({r.reason for r in required.values()})
        if all(r.timed_out for r in required.values()):
            raise PreconditionFailed(
                f"The FHIR server did not return the missing prefetch data within {policy.deadline_seconds:g} s "
                f"({', '.join(sorted(required))}).", code="timeout")
        if all(r.outcome is UNAVAILABLE for r in required.values()):
            raise PreconditionFailed(f"Prefetch data is missing for {', '.join(sorted(required))} and "
                                     f"{'; '.join(reasons)}.")
        raise PreconditionFailed(f"Could not fetch the missing prefetch data ({', '.join(sorted(required))}): "
                                 f"{'; '.join(reasons)}.")
    record = PatientRecord(patient_id=call.patient_id, notes=list(call.notes))
    unsettled = sorted(k for k, r in results.items() if not r.settled)
    if unsettled:
        sent_nothing = all(results[k].outcome is UNAVAILABLE for k in unsettled)
        record.notes.append(("not sent by the EHR: " if sent_nothing else "not available from the FHIR server: ")
                            + describe_optional(unsettled))
    record.notes.extend(notes)
    for result in results.values():
        if result.outcome is ANSWERED:
            record.add(result.value)
    if record.other_patients:  # never named: the note reaches the cards
        record.notes.append(f"left out {record.other_patients} resource(s) about another patient than the one "
                            "of this call")
    if record.patient is None:
        record.notes.append("no Patient resource was available; age and sex unknown")
    record.draft_orders = call.draft_orders
    record.selections = call.selections
    return record
