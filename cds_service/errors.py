"""Errors as FHIR OperationOutcomes.

Every non-2xx answer carries an OperationOutcome (CDS Hooks 3.0 ballot recommends it; 2.0.1 allows it)
whose ``diagnostics`` a human integrator can act on. Messages never contain tokens or patient ids.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

FHIR_JSON = "application/fhir+json"


def operation_outcome(message: str, code: str = "invalid", severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }


class ServiceError(Exception):
    """An error with an HTTP status and an OperationOutcome issue type."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def response(self) -> Response:
        return outcome_response(self.message, self.status, self.code, self.headers)


class BadRequest(ServiceError):
    status, code = 400, "invalid"


class NotFound(ServiceError):
    status, code = 404, "not-found"


class PreconditionFailed(ServiceError):
    """Required FHIR data could not be had (spec: SHALL answer 412)."""

    status, code = 412, "incomplete"


class ClientGone(ServiceError):
    """The client closed the connection before its body arrived: no one reads the answer. 499 is the status
    proxies log for it; it is an ordinary refused request in logs and metrics, not a server error."""

    status, code = 499, "incomplete"


class PayloadTooLarge(ServiceError):
    status, code = 413, "too-costly"


class Unauthorized(ServiceError):
    """401 without detail: the reason goes to the log, never to the caller (CDS Hooks best practice)."""

    status, code = 401, "login"

    def __init__(self, reason: str) -> None:
        super().__init__("Authentication required.", headers={"WWW-Authenticate": 'Bearer realm="cds-services"'})
        self.reason = reason


def outcome_response(message: str, status: int, code: str = "invalid",
                     headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(operation_outcome(message, code)),
        status_code=status,
        media_type=FHIR_JSON,
        headers=headers,
    )
