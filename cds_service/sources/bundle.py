"""A FHIR Bundle posted by a developer, used as if it were the EHR's FHIR server.

:class:`BundleSource` answers the service's prefetch queries from the bundle's resources, and
:func:`request_from_bundle` builds the CDS Hooks request an EHR would send for it (context,
draftOrders, selections, prefetch), so developers see exactly what goes over the wire.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

from cds_service.clinical.record import ORDER_TYPES
from cds_service.errors import BadRequest
from cds_service.services import Service
from cds_service.sources.base import DataSource, KeyResult
from cds_service.sources.gather import prefetch_queries

BUNDLE_TYPES = ("collection", "transaction", "searchset", "batch", "document", "message")
_PATIENT_REFS = ("subject", "patient")
_FILLER_USER = "Practitioner/fixture-clinician"


def bundle_resources(bundle: Any) -> list[dict[str, Any]]:
    """The resources of a Bundle, with a 400 that names the entry that is wrong."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("The body must be a FHIR Bundle (resourceType 'Bundle').")
    btype = bundle.get("type")
    if btype is not None and btype not in BUNDLE_TYPES:
        raise BadRequest(f"Bundle.type '{btype}' is not supported; use collection, transaction or searchset.")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("Bundle.entry must be a non-empty array.")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRequest(f"Bundle.entry[{i}] is not an object.")
        res = entry.get("resource")
        if not isinstance(res, dict):
            raise BadRequest(f"Bundle.entry[{i}] has no resource.")
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            raise BadRequest(f"Bundle.entry[{i}].resource has no resourceType.")
        if "id" in res and not isinstance(res["id"], str):
            raise BadRequest(f"Bundle.entry[{i}].resource ({rtype}) has an id that is not a string.")
        if not res.get("id"):
            # transaction bundles often carry only fullUrl: urn:uuid:...
            full = entry.get("fullUrl")
            res = dict(res)
            res["id"] = full.rsplit(":", 1)[-1].rsplit("/", 1)[-1] if isinstance(full, str) else f"entry-{i}"
        out.append(res)
    return out


def _refers_to(resource: dict[str, Any], patient_id: str) -> bool:
    for key in _PATIENT_REFS:
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            r = ref["reference"]
            if r == f"Patient/{patient_id}" or r.endswith(f"/Patient/{patient_id}") or r.endswith(patient_id):
                return True
    return False


class BundleSource(DataSource):
    """Runs the (simple) prefetch queries against a bundle's resources."""

    def __init__(self, resources: list[dict[str, Any]], patient_id: str, exclude: set[tuple[str, str]] = frozenset()):
        self.resources = resources
        self.patient_id = patient_id
        self.exclude = exclude  # the draft orders: they travel in context, not in prefetch

    name = "the posted bundle"

    async def fetch(self, queries: dict[str, str], deadline: float) -> dict[str, KeyResult]:
        return {key: KeyResult.answered(value) for key, value in self.answer(queries).items()}

    def answer(self, queries: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, query in queries.items():
            path, _, qs = query.partition("?")
            if not qs:  # a read: Type/id
                rtype, _, rid = path.partition("/")
                found = next((r for r in self.resources if r["resourceType"] == rtype and r.get("id") == rid), None)
                out[key] = found
                continue
            params = dict(parse_qsl(qs))
            codes = {c.split("|")[-1] for c in params.get("code", "").split(",") if c}
            matches = []
            for r in self.resources:
                if r["resourceType"] != path or (r["resourceType"], r.get("id")) in self.exclude:
                    continue
                if not _refers_to(r, self.patient_id):
                    continue
                if codes:
                    coded = {c.get("code") for c in (r.get("code") or {}).get("coding") or [] if isinstance(c, dict)}
                    if not coded & codes:
                        continue
                matches.append(r)
            out[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matches),
                "entry": [{"fullUrl": f"{r['resourceType']}/{r.get('id')}", "resource": r} for r in matches],
            }
        return out


def _is_draft_order(res: dict[str, Any]) -> bool:
    return res["resourceType"] in ORDER_TYPES and res.get("status") == "draft"


def request_from_bundle(bundle: dict[str, Any], service: Service, order: str | None = None) -> dict[str, Any]:
    """Build the CDS Hooks request an EHR would send to ``service`` for ``bundle``.

    ``order`` ("MedicationRequest/abc") chooses the order being placed; by default every draft order
    in the bundle is placed (a hook with selections selects them all). A service whose hook places no order
    (patient-view) gets the chart as it stands (draft orders left out), as when the clinician opens it.
    """
    hook = service.hook
    templates = dict(service.prefetch)
    resources = bundle_resources(bundle)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise BadRequest(f"The bundle must hold exactly one Patient (it holds {len(patients)}).")
    patient_id = patients[0]["id"]
    drafts = [r for r in resources if _is_draft_order(r)]
    if not service.places_orders:
        context = {"userId": _FILLER_USER, "patientId": patient_id}
        source = BundleSource(resources, patient_id, {(r["resourceType"], r["id"]) for r in drafts})
        return {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context,
                "prefetch": source.answer(prefetch_queries(templates, context, patient_id, _FILLER_USER))}
    medications = [r for r in resources if r["resourceType"] == "Medication"]
    if order:
        rtype, _, rid = order.partition("/")
        chosen = [r for r in resources if r["resourceType"] == rtype and r.get("id") == rid]
        if not chosen:
            raise BadRequest(f"The bundle has no {order} to place as the order.")
        if chosen[0] not in drafts:
            drafts.append(chosen[0])
        selections = [order]
    else:
        if not drafts:
            raise BadRequest("The bundle holds no draft order (a MedicationRequest or ServiceRequest with "
                             "status 'draft'); add one or name the order to place.")
        selections = [f"{r['resourceType']}/{r['id']}" for r in drafts]
    context: dict[str, Any] = {"userId": _FILLER_USER, "patientId": patient_id}
    if service.has_selections:
        context["selections"] = selections
    context["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in drafts + medications],
    }
    source = BundleSource(resources, patient_id, {(r["resourceType"], r["id"]) for r in drafts})
    queries = prefetch_queries(templates, context, patient_id, _FILLER_USER)
    return {
        "hookInstance": str(uuid.uuid4()),
        "hook": hook,
        "context": context,
        "prefetch": source.answer(queries),
    }
