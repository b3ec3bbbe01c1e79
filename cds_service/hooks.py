"""Validate a CDS Hooks call and normalise its context, strict where the spec is, lenient where clients aren't.

Strict (400): hook matches the service, ``hookInstance``, ``context.patientId``, ``context.userId``,
``context.draftOrders`` (a Bundle-shaped object), ``fhirServer`` whenever ``fhirAuthorization`` is sent.

Lenient (real clients, see the captured requests in ``tests/data/client-examples/``): a draftOrders Bundle
without ``type``; ``category``/``reasonCode`` sent as an object; Medication entries mixed into draftOrders and
referenced by ``medicationReference``; ids longer than FHIR's 64 characters; ``Patient/`` (or an absolute URL) in
``patientId``; unknown context keys and ``extension`` objects; DSTU2 ``MedicationOrder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cds_service.clinical.record import ORDER_TYPES
from cds_service.errors import BadRequest
from cds_service.models import EVALUATION_TIME_EXTENSION, HookRequestBody
from cds_service.services import Service

# R4 elements that are arrays but some clients send as a single object.
_ARRAY_ELEMENTS = ("category", "reasonCode", "dosageInstruction", "identifier", "note")


@dataclass
class HookCall:
    service: Service
    envelope: Envelope
    patient_id: str
    user_id: str
    draft_orders: list[dict[str, Any]]
    selections: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def hook(self) -> str:
        return self.envelope.hook

    @property
    def hook_instance(self) -> str:
        return self.envelope.hook_instance


@dataclass(frozen=True, slots=True)
class Envelope:
    """The top level of a call as :class:`~cds_service.models.HookRequestBody` accepts it: the fields read here."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    fhir_server: str | None = None
    fhir_token: str | None = None  # fhirAuthorization.access_token
    extension: dict[str, Any] | None = None


def _plain_envelope(data: dict[str, Any]) -> Envelope | None:
    """The envelope of the usual call, read without the model: every field of a type the model takes as it
    is, no ``fhirAuthorization``. None for anything else (the model then decides, and names what is wrong)."""
    get = data.get
    hook, instance, context = get("hook"), get("hookInstance"), get("context")
    prefetch, server, extension = get("prefetch"), get("fhirServer"), get("extension")
    if (type(hook) is str and hook and type(instance) is str and instance and type(context) is dict
            and (prefetch is None or type(prefetch) is dict) and (extension is None or type(extension) is dict)
            and get("fhirAuthorization") is None
            and (server is None or (type(server) is str and server.startswith(("http://", "https://"))))):
        return Envelope(hook, instance, context, prefetch, server, None, extension)
    return None


def read_envelope(data: dict[str, Any]) -> Envelope:
    """The call's envelope; a 400 naming the first problems when :class:`HookRequestBody` refuses it."""
    envelope = _plain_envelope(data)
    if envelope is not None:
        return envelope
    try:
        body = HookRequestBody.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"Invalid CDS Hooks request: {describe(exc)}.") from exc
    token = body.fhirAuthorization.access_token if body.fhirAuthorization is not None else None
    return Envelope(body.hook, body.hookInstance, body.context, body.prefetch, body.fhirServer, token,
                    body.extension)


def describe(exc: ValidationError) -> str:
    """The first few validation errors, each as ``location: message``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "request"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def evaluation_time(extension: dict[str, Any] | None) -> datetime | None:
    """The time a fixture request pins as "now" (request ``extension``), as an aware datetime, or None."""
    value = (extension or {}).get(EVALUATION_TIME_EXTENSION)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def last_segment(reference: str, rtype: str) -> str:
    """``Patient/123``, ``https://ehr/fhir/Patient/123`` or ``123`` -> ``123``."""
    ref = reference.strip()
    marker = f"{rtype}/"
    if marker in ref:
        ref = ref.rsplit(marker, 1)[1]
    return ref.split("/_history/")[0].strip("/")


def _as_list(resource: dict[str, Any], key: str) -> None:
    value = resource.get(key)
    if isinstance(value, dict):
        resource[key] = [value]


def _clean_order(resource: dict[str, Any], medications: dict[str, dict[str, Any]], notes: list[str]) -> dict:
    order = dict(resource)
    if order.get("resourceType") == "MedicationOrder":  # DSTU2 sandbox; same fields the rules read
        order["resourceType"] = "MedicationRequest"
        notes.append("draftOrders held a DSTU2 MedicationOrder; read as MedicationRequest")
    for key in _ARRAY_ELEMENTS:
        _as_list(order, key)
    ref = order.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and "medicationCodeableConcept" not in order:
        target = ref["reference"]
        contained = [c for c in order.get("contained") or () if isinstance(c, dict)]
        if target.startswith("#") and any(c.get("id") == target[1:] for c in contained):
            return order  # a contained Medication: read where it is
        med = medications.get(target) or medications.get(last_segment(target, "Medication"))
        if med is not None and isinstance(med.get("code"), dict):
            # Carried inside the order, whole: its code names the drug, its strength gives the concentration
            # (decision 34).
            local = dict(med, id=str(med.get("id") or "medication"))
            order["contained"] = [*contained, local]
            order["medicationReference"] = {**ref, "reference": f"#{local['id']}"}
        else:
            notes.append(f"{order.get('resourceType')} medicationReference could not be resolved in draftOrders")
    return order


def parse_draft_orders(draft: Any, notes: list[str]) -> list[dict[str, Any]]:
    if not isinstance(draft, dict):
        raise BadRequest("context.draftOrders must be a FHIR Bundle object.")
    if draft.get("resourceType") not in (None, "Bundle"):
        raise BadRequest("context.draftOrders must be a FHIR Bundle (resourceType 'Bundle').")
    entries = draft.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("context.draftOrders.entry must be an array.")
    resources: list[dict[str, Any]] = []
    medications: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            notes.append(f"draftOrders.entry[{i}] has no resource; skipped")
            continue
        if res["resourceType"] == "Medication":
            rid = res.get("id")
            if isinstance(rid, str):
                medications[rid] = res
                medications[f"Medication/{rid}"] = res
            full = entry.get("fullUrl")
            if isinstance(full, str):
                medications[full] = res
            continue
        resources.append(res)
    orders = []
    for res in resources:
        if res["resourceType"] in ORDER_TYPES:
            orders.append(_clean_order(res, medications, notes))
        else:
            notes.append(f"draftOrders held a {res['resourceType']}; ignored")
    return orders


def parse_call(service: Service, data: dict[str, Any]) -> HookCall:
    envelope = read_envelope(data)
    if envelope.hook != service.hook:
        raise BadRequest(
            f"Service '{service.id}' answers the '{service.hook}' hook, but the request is for '{envelope.hook}'."
        )
    ctx = envelope.context
    notes: list[str] = []

    patient = ctx.get("patientId")
    if not isinstance(patient, str) or not patient.strip():
        raise BadRequest("context.patientId is required (a non-empty string).")
    patient_id = last_segment(patient, "Patient")
    if not patient_id:
        raise BadRequest("context.patientId does not name a patient.")

    user = ctx.get("userId")
    if not isinstance(user, str) or not user.strip():
        raise BadRequest("context.userId is required (a non-empty string such as 'Practitioner/123').")

    encounter = ctx.get("encounterId")  # not read by the rules; a wrong type is still the caller's mistake
    if encounter is not None and not isinstance(encounter, str):
        raise BadRequest("context.encounterId must be a string.")

    orders: list[dict[str, Any]] = []
    if not service.places_orders:
        pass  # the chart as it stands: no orders in this hook's context
    elif "draftOrders" not in ctx:
        raise BadRequest(
            f"context.draftOrders is required for {service.hook}. (Epic leaves it out when the "
            "client lacks the unsigned-order scopes; grant them.)"
        )
    else:
        orders = parse_draft_orders(ctx["draftOrders"], notes)

    selections: list[str] = []
    if service.has_selections:
        raw = ctx.get("selections")
        if raw is None:
            notes.append(f"{service.hook} without context.selections; every draft order treated as selected")
        elif not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            raise BadRequest("context.selections must be an array of references such as 'MedicationRequest/1'.")
        else:
            selections = raw

    return HookCall(
        service=service,
        envelope=envelope,
        patient_id=patient_id,
        user_id=user,
        draft_orders=orders,
        selections=selections,
        notes=notes,
    )
