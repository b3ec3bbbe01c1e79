"""Fetch prefetch keys from the EHR's FHIR server (the spec's fallback when a key is missing).

One shared ``httpx.AsyncClient`` (connection pooling) is passed in; keys are fetched in parallel and
``next`` pages followed up to a bound. Redirects are never followed and ``next`` links must stay on the
FHIR server's own origin, so a hostile server cannot point us anywhere else. The caller puts one
deadline around the whole fetch.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from cds_service.sources.base import DataSource, SourceError

ACCEPT = "application/fhir+json, application/json;q=0.9"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


class FhirServerSource(DataSource):
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        access_token: str | None = None,
        *,
        max_pages: int = 5,
        max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/") + "/"
        self.headers = {"Accept": ACCEPT}
        if access_token:
            self.headers["Authorization"] = f"Bearer {access_token}"
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.requests_made = 0

    async def fetch(self, queries: dict[str, str]) -> dict[str, Any]:
        keys = list(queries)
        results = await asyncio.gather(*(self.fetch_one(queries[k]) for k in keys))
        return dict(zip(keys, results, strict=True))

    async def _get(self, url: str) -> dict[str, Any] | None:
        if _origin(url) != _origin(self.base_url):
            raise SourceError("the FHIR server pointed to another host; not followed")
        self.requests_made += 1
        try:
            resp = await self.client.get(url, headers=self.headers, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise SourceError("the FHIR server did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise SourceError(f"the FHIR server could not be reached ({type(exc).__name__})") from exc
        if resp.status_code == 404:
            return None  # a read of a resource that does not exist: known empty
        if resp.status_code >= 300:
            raise SourceError(f"the FHIR server answered HTTP {resp.status_code}")
        if len(resp.content) > self.max_bytes:
            raise SourceError("the FHIR server answer was too large")
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise SourceError("the FHIR server answered with something that is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise SourceError("the FHIR server answered with something that is not a FHIR resource")
        if data["resourceType"] == "OperationOutcome":
            raise SourceError("the FHIR server answered with an OperationOutcome")
        return data

    async def fetch_one(self, query: str) -> dict[str, Any] | None:
        data = await self._get(urljoin(self.base_url, query.lstrip("/")))
        if data is not None and data.get("resourceType") == "Bundle":
            await self.follow_pages(data)
        return data

    async def follow_pages(self, bundle: dict[str, Any]) -> int:
        """Append the entries of ``next`` pages to ``bundle`` in place; returns pages read."""
        pages = 0
        url = next_link(bundle)
        entries = bundle.setdefault("entry", [])
        if not isinstance(entries, list):
            raise SourceError("a searchset Bundle has an entry that is not an array")
        while url and pages < self.max_pages:
            page = await self._get(urljoin(self.base_url, url))
            pages += 1
            if page is None or page.get("resourceType") != "Bundle":
                break
            entries.extend(page.get("entry") or [])
            url = next_link(page)
        bundle["link"] = [ln for ln in bundle.get("link") or [] if ln.get("relation") != "next"]
        if url:
            bundle["_truncated"] = True
        return pages
