"""The OpenAPI document and its page (``/docs``, Swagger UI), working without internet access.

The page assets (the Swagger UI bundle and stylesheet) come from the ``fastapi-offline`` package and are
served by the service itself (``create_app`` builds the app with it): no CDN. There is no ``/redoc``: the
Redoc bundle loads its logo from a CDN. The document is FastAPI's, completed
with what route introspection cannot see:

* the hook-call and feedback bodies (the handlers read raw bytes for speed);
* the FHIR ``OperationOutcome`` every error answers with, on every documented error status;
* the bearer JWT EHRs send (``bearerJWT``; optional when this instance runs without authentication);
* the service ids as an enum, and per service the request it expects (its hook, its context fields, its
  prefetch keys and the FHIR resource each one holds), as ``oneOf`` on the hook-call body;
* no 422: request validation errors are answered 400 here.

Docstring markup that is not Markdown (Sphinx roles, double backticks) is rewritten as Markdown code.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from cds_service.config import Settings
from cds_service.errors import FHIR_JSON
from cds_service.models import FeedbackRequest, HookRequestBody
from cds_service.services import registry

JSON = "application/json"
SECURITY_SCHEME = "bearerJWT"
ERROR_DESCRIPTIONS = {
    400: "Malformed or invalid request; the OperationOutcome names what is wrong.",
    401: "A signed JWT from a trusted issuer is required (Authorization: Bearer). No detail is given; the "
         "reason is logged.",
    404: "Unknown service or resource.",
    405: "Method not allowed on this path.",
    412: "Required FHIR data could not be had: no prefetch and no fhirServer, or the FHIR server failed or "
         "timed out.",
    413: "The request body is larger than CDS_MAX_BODY_BYTES.",
    415: "Content-Type must be application/json.",
    503: "A dependency is unavailable (JWKS, replay cache or audit database); retry later.",
}
# Error statuses of each operation beyond what its route declares (authentication and dependencies).
SECURED_TAGS = ("CDS Hooks", "Developer preview")
REQUEST_BODIES = {
    "/cds-services/{service_id}": "HookRequestBody",
    "/cds-services/{service_id}/feedback": "FeedbackRequest",
}
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc|ref|const):`~?([^`]+)`")
_DOUBLE_BACKTICK = re.compile(r"``([^`]+)``")

OPERATION_OUTCOME = {
    "title": "OperationOutcome",
    "description": "FHIR R4 OperationOutcome: every non-2xx answer carries one; `diagnostics` says what to "
                   "fix. Never carries tokens or patient identifiers.",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string", "description": "FHIR issue type, e.g. invalid, login, not-found, "
                                                              "incomplete, too-costly, not-supported, transient."},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
    "example": {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid",
                           "diagnostics": "context.patientId is required (a non-empty string)."}]},
}


def markdown(text: str) -> str:
    """Sphinx roles and reStructuredText double backticks as Markdown code spans."""
    return _DOUBLE_BACKTICK.sub(r"`\1`", _ROLE.sub(r"`\1`", text))


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (markdown(v) if k in ("description", "summary") and isinstance(v, str) else _clean(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _error_response(status: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/OperationOutcome"}
    return {"description": ERROR_DESCRIPTIONS.get(status, "Error."),
            "content": {FHIR_JSON: {"schema": ref}}}


def _complete_operation(path: str, op: dict[str, Any], settings: Settings) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's validation error: this service answers 400 (declared per route)
    secured = any(tag in SECURED_TAGS for tag in op.get("tags", ()))
    if secured and settings.auth_enabled:
        responses.setdefault("401", {})
        responses.setdefault("503", {})  # JWKS or replay cache unavailable
        op["security"] = [{SECURITY_SCHEME: []}]
    elif secured:  # development instance: no token is checked, so none is needed and no 401 is answered
        responses.pop("401", None)
        op["security"] = [{SECURITY_SCHEME: []}, {}]
    for status in list(responses):
        if status.isdigit() and int(status) >= 400:
            responses[status] = _error_response(int(status))
    services = registry(settings)
    for param in op.get("parameters", ()):
        if param.get("name") == "hook" and param.get("in") == "query":  # /fixtures/evaluate
            param["schema"] = {"type": "string", "enum": list(services.hooks), "default": "order-select",
                               "title": "Hook"}
        if param.get("name") == "service_id" and param.get("in") == "path":
            param["schema"] = {"type": "string", "enum": sorted(services.ids()), "title": "Service id"}
            param["description"] = "One of the services listed by discovery (GET /cds-services)."
    if path in REQUEST_BODIES and op.get("requestBody") is None:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{REQUEST_BODIES[path]}"}
        if REQUEST_BODIES[path] == "HookRequestBody":  # the shape each service expects
            schema = {"oneOf": [{"$ref": f"#/components/schemas/Request-{sid}"} for sid in sorted(services.ids())]}
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}


_CONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "userId": {"type": "string", "description": "The user in the EHR, e.g. Practitioner/123."},
    "patientId": {"type": "string", "minLength": 1, "description": "The FHIR id of the patient in context."},
    "encounterId": {"type": "string", "description": "The FHIR id of the encounter in context, if any."},
    "draftOrders": {"type": "object", "description": "A FHIR Bundle of the draft orders (MedicationRequest, "
                                                       "ServiceRequest, ...).",
                    "required": ["resourceType"], "properties": {"resourceType": {"const": "Bundle"}}},
    "selections": {"type": "array", "items": {"type": "string"},
                   "description": "The selected orders, as type/id references into draftOrders."},
}
_CONTEXT_REQUIRED = {"patient": ["userId", "patientId"],
                     "orders": ["userId", "patientId", "draftOrders"],
                     "selected-orders": ["userId", "patientId", "selections", "draftOrders"]}


def _prefetch_schema(key: str, template: str) -> dict[str, Any]:
    """A prefetch key's value: the resource a read answers, or the Bundle a search answers (or null)."""
    resource_type = template.split("?")[0].split("/")[0]
    holds = resource_type if "?" not in template else "Bundle"
    return {"type": ["object", "null"], "title": key,
            "description": f"`{template}`: a FHIR {holds}" + (f" of {resource_type} resources" if holds == "Bundle"
                                                              else "") + "; null when the EHR has none to give.",
            "properties": {"resourceType": {"const": holds}}}


def service_request_schema(service) -> dict[str, Any]:
    """The hook-call body one service expects: HookRequestBody narrowed to its hook, context and prefetch."""
    fields = ["userId", "patientId", "encounterId"]
    if service.places_orders:
        fields.append("draftOrders")
    if service.has_selections:
        fields.append("selections")
    return {
        "title": f"{service.id} request",
        "description": f"A `{service.hook}` call to `{service.id}`. Prefetch keys left out are read from "
                       "fhirServer when one is given; optional keys left out become a note on the cards.",
        "allOf": [{"$ref": "#/components/schemas/HookRequestBody"}],
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "const": service.hook},
            "context": {"type": "object", "required": _CONTEXT_REQUIRED[service.context],
                        "properties": {f: _CONTEXT_FIELDS[f] for f in fields}},
            "prefetch": {"type": "object",
                         "properties": {k: _prefetch_schema(k, t) for k, t in service.prefetch.items()}},
        },
    }


def build_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    from fastapi.openapi.utils import get_openapi  # the document is built when first asked for, not at start

    routes = [*app.routes, *getattr(app.state, "documented_only", [])]
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=routes)
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for model in (HookRequestBody, FeedbackRequest):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["OperationOutcome"] = OPERATION_OUTCOME
    for service in registry(settings):
        schemas[f"Request-{service.id}"] = service_request_schema(service)
    comps["securitySchemes"] = {SECURITY_SCHEME: {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "The CDS Client's signed JWT (ES384 or RS384) from an issuer in CDS_TRUSTED_ISSUERS; "
                       "aud is the URL called. " + ("Required on this instance." if settings.auth_enabled else
                                                    "This instance runs without authentication (development)."),
    }}
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            if isinstance(op, dict):
                _complete_operation(path, op, settings)
    return _clean(schema)


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi
