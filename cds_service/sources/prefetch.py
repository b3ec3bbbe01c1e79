"""Prefetch as the EHR sent it, read exactly as CDS Hooks 2.0.1 says.

* a key that is absent was not done: the caller fetches it;
* ``null`` means the query ran and found nothing: never re-queried;
* an OperationOutcome means the client failed: treated as absent, so it is fetched;
* keys we did not ask for are ignored.
"""

from __future__ import annotations

from typing import Any

from cds_service.errors import BadRequest
from cds_service.sources.base import DataSource, KeyResult

_REPORTED_FAILED = KeyResult.failed("the EHR reported that its prefetch query failed")
_NOT_SENT = KeyResult.unavailable("not sent by the EHR")


def _is_outcome_only(value: dict[str, Any]) -> bool:
    """A Bundle that holds nothing but OperationOutcome entries with search.mode 'error'."""
    entries = value.get("entry")
    if not isinstance(entries, list) or not entries:  # a non-array entry is refused by the caller (400)
        return False
    for e in entries:
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict) or res.get("resourceType") != "OperationOutcome":
            return False
        search = e.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if mode == "outcome":  # Epic's "no results" marker inside an otherwise valid searchset
            return False
    return True


class PrefetchSource(DataSource):
    name = "prefetch"

    def __init__(self, prefetch: dict[str, Any] | None) -> None:
        self.prefetch = prefetch or {}
        self.failed: list[str] = []  # keys the client reported as failed (OperationOutcome)

    async def fetch(self, queries: dict[str, str], deadline: float) -> dict[str, KeyResult]:
        values = self.answer(queries)
        return {key: KeyResult.answered(values[key]) if key in values  # null: EMPTY
                else _REPORTED_FAILED if key in self.failed else _NOT_SENT for key in queries}

    def notes(self) -> list[str]:
        return ["the EHR reported failed prefetch for " + ", ".join(self.failed)] if self.failed else []

    def answer(self, queries: dict[str, str]) -> dict[str, Any]:
        """Synchronous core of :meth:`fetch` (no I/O is involved)."""
        out: dict[str, Any] = {}
        for key in queries:
            if key not in self.prefetch:
                continue
            value = self.prefetch[key]
            if value is None:
                out[key] = None
                continue
            if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
                raise BadRequest(f"prefetch.{key} must be a FHIR resource, a Bundle or null.")
            rtype = value["resourceType"]
            if rtype == "OperationOutcome" or (rtype == "Bundle" and _is_outcome_only(value)):
                self.failed.append(key)
                continue
            if rtype == "Bundle" and not isinstance(value.get("entry", []), list):
                raise BadRequest(f"prefetch.{key}.entry must be an array.")
            out[key] = value
        return out
