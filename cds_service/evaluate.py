"""Evaluate a posted FHIR Bundle as if an EHR had sent it (CLI ``evaluate`` and ``/fixtures/evaluate``)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from cds_service.config import Settings, get_settings
from cds_service.errors import BadRequest
from cds_service.governance.modes import cached_rule_modes
from cds_service.hooks import evaluation_time, parse_call
from cds_service.models import EVALUATION_TIME_EXTENSION, encode_response
from cds_service.response import evaluate_cards
from cds_service.services import Service, registry
from cds_service.smart.links import for_call
from cds_service.sources.bundle import request_from_bundle
from cds_service.sources.gather import GatherPolicy, gather, prefetch_only
from cds_service.workload import Workload, WorkloadPolicy


def service_for(hook: str, settings: Settings | None = None) -> Service:
    """The service answering ``hook``; a 400 naming the hooks there are when none does."""
    services = registry(settings or get_settings())
    service = services.for_hook(hook)
    if service is None:
        raise BadRequest(f"hook must be one of {', '.join(services.hooks)}, not '{hook}'.")
    return service


def build_request(bundle: dict[str, Any], hook: str, order: str | None = None,
                  settings: Settings | None = None) -> dict[str, Any]:
    """The CDS Hooks request for ``bundle``; a Bundle.timestamp pins the evaluation time (fixtures)."""
    request = request_from_bundle(bundle, service_for(hook, settings), order)
    timestamp = bundle.get("timestamp")
    if isinstance(timestamp, str):
        request["extension"] = {EVALUATION_TIME_EXTENSION: timestamp}
    return request


async def evaluate_request_async(request: dict[str, Any], hook: str, base_url: str | None = None,
                                 settings: Settings | None = None) -> dict[str, Any]:
    """The CDS Hooks response for ``request``; cards carry the timeline link when development links are on
    (``CDS_SMART_LINKS_UNAUTHENTICATED``), pointing at ``base_url`` (else the configured host and port).
    The site's rule modes apply as in a hook call: ``off`` rules are not run, ``shadow`` cards left out."""
    settings = settings or get_settings()
    call = parse_call(service_for(hook, settings), request)
    Workload(WorkloadPolicy.from_settings(settings)).check(call)  # CDS_MAX_DRAFT_ORDERS, as for hook calls
    now = evaluation_time(request.get("extension"))
    policy = GatherPolicy(deadline_seconds=1.0)
    record = await gather(call, prefetch_only(call), policy)  # the bundle's data is all in prefetch
    if now is not None:
        record.now = now
    modes = cached_rule_modes(settings.rules_file)
    cards, _shadow = modes.split(evaluate_cards(record, call.service.engine_hook, call.hook_instance,
                                                call.service.rule_groups, modes.off))
    if not settings.auth_enabled:
        for_call(cards, settings, None, base_url)
    return orjson.loads(encode_response(cards))  # a copy: the cards share parts with their templates


def evaluate_bundle(bundle: dict[str, Any], hook: str, order: str | None = None) -> tuple[dict, dict]:
    request = build_request(bundle, hook, order)
    return request, asyncio.run(evaluate_request_async(request, hook))
