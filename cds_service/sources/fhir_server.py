"""Fetch prefetch keys from the EHR's FHIR server (the spec's fallback when a key is missing).

One shared ``httpx.AsyncClient`` (connection pooling) is passed in; keys are fetched in parallel and
``next`` pages followed up to a bound. Redirects are never followed and ``next`` links must stay on the
FHIR server's own origin, so a hostile server cannot point us anywhere else. An answer is read as a
stream and refused as soon as it passes the size cap, and it must keep the same JSON depth and array
bounds as a request body. The caller puts one deadline around the whole fetch.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from cds_service.body import check_document_bounds, join_limited
from cds_service.errors import BadRequest
from cds_service.sources.base import DataSource, SourceError

ACCEPT = "application/fhir+json, application/json;q=0.9"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


async def gather_all(*aws: Any) -> list[Any]:
    """``asyncio.gather`` that lets every awaitable finish, then raises the first error.

    Plain gather raises at the first failure and leaves the siblings running; their later exceptions are
    never retrieved, and asyncio then logs them with a traceback that can hold request URLs (patient ids).
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
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
        max_depth: int = 64,
        max_array: int = 20_000,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/") + "/"
        self.headers = {"Accept": ACCEPT}
        if access_token:
            self.headers["Authorization"] = f"Bearer {access_token}"
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_array = max_array
        self.requests_made = 0

    async def fetch(self, queries: dict[str, str]) -> dict[str, Any]:
        keys = list(queries)
        results = await gather_all(*(self.fetch_one(queries[k]) for k in keys))
        return dict(zip(keys, results, strict=True))

    def _join(self, ref: str) -> str:
        try:  # a hostile fhirServer or next link ("http://[", port 99999) must be a 412, not a 500
            url = urljoin(self.base_url, ref)
            same = _origin(url) == _origin(self.base_url)
        except ValueError:
            raise SourceError("the FHIR server URL is not valid") from None  # no URL (patient id) in the chain
        if not same:
            raise SourceError("the FHIR server pointed to another host; not followed")
        return url

    async def _get(self, url: str) -> dict[str, Any] | None:
        url = self._join(url)
        self.requests_made += 1
        try:
            async with self.client.stream("GET", url, headers=self.headers, follow_redirects=False) as resp:
                if resp.status_code == 404:
                    return None  # a read of a resource that does not exist: known empty
                if resp.status_code >= 300:
                    raise SourceError(f"the FHIR server answered HTTP {resp.status_code}")
                raw = await self._read_capped(resp)
        except httpx.TimeoutException as exc:
            raise SourceError("the FHIR server did not answer in time") from exc
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # ValueError: httpx on host-less URLs
            raise SourceError(f"the FHIR server could not be reached ({type(exc).__name__})") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SourceError("the FHIR server answered with something that is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise SourceError("the FHIR server answered with something that is not a FHIR resource")
        # The same structural bounds as a request body: a FHIR server is as untrusted as any caller.
        try:
            check_document_bounds(raw, data, self.max_depth, self.max_array)
        except BadRequest as exc:
            raise SourceError(f"the FHIR server answer broke the service's JSON bounds ({exc.message})") from None
        if data["resourceType"] == "OperationOutcome":
            raise SourceError("the FHIR server answered with an OperationOutcome")
        return data

    async def _read_capped(self, resp: httpx.Response) -> bytes:
        """The body, refused as soon as it passes ``max_bytes`` (never held whole when it is too large)."""
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise SourceError("the FHIR server answer was too large")
        body = await join_limited(resp.aiter_bytes(), self.max_bytes)
        if body is None:
            raise SourceError("the FHIR server answer was too large")
        return body

    async def fetch_one(self, query: str) -> dict[str, Any] | None:
        data = await self._get(query.lstrip("/"))
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
            page = await self._get(url)
            pages += 1
            if page is None or page.get("resourceType") != "Bundle":
                break
            more = page.get("entry")
            if isinstance(more, list):
                entries.extend(more)
            url = next_link(page)
        links = bundle.get("link")
        bundle["link"] = [ln for ln in links if not (isinstance(ln, dict) and ln.get("relation") == "next")] \
            if isinstance(links, list) else []
        if url:
            bundle["_truncated"] = True
        return pages
