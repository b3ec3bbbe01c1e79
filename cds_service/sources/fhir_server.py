"""Fetch prefetch keys from the EHR's FHIR server (the spec's fallback when a key is missing).

One shared ``httpx.AsyncClient`` (connection pooling) is passed in; keys are fetched in parallel and
``next`` pages followed up to a bound. Redirects are never followed and ``next`` links must stay on the
FHIR server's own origin, so a hostile server cannot point us anywhere else. An answer is read as a
stream and refused as soon as it passes the size cap, and it must keep the same JSON depth and array
bounds as a request body. Every request goes through the origin's guard (bounded concurrency, circuit
breaker: :mod:`cds_service.sources.origin`), and each key ends by the call's deadline with a result of
its own, so one slow key never turns into an error for another.

HTTP 404 on a read (``Patient/123``) means the resource does not exist: known empty. HTTP 404 on a search
means the server has no such endpoint (a wrong base URL): a failure, never "no data".
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import orjson

from cds_service.body import check_bounds, join_limited
from cds_service.errors import BadRequest
from cds_service.sources.base import DataSource, KeyResult, SourceError
from cds_service.sources.origin import OriginGuard, OriginGuards, origin_of

if TYPE_CHECKING:  # httpx is imported when a FHIR server is first called, not at service start
    import httpx

ACCEPT = "application/fhir+json, application/json;q=0.9"
# An answer larger than this is parsed and bounds-checked in a worker thread (~10 ms of CPU at this size),
# so a FHIR server's megabytes do not stall the other calls of the event loop.
LARGE_ANSWER_BYTES = 512 * 1024
# A URL whose last segment is a bare resource type is a search even without a query string.
_SEARCH_TYPES = ("/Condition", "/Observation", "/MedicationStatement", "/MedicationRequest",
                 "/AllergyIntolerance", "/MedicationAdministration", "/Device")


class _TooSlow(Exception):
    pass


async def _until(chunks, deadline: float):
    """The chunks, stopped (an exception, so the response is closed normally) once ``deadline`` passes."""
    loop = asyncio.get_running_loop()
    async for chunk in chunks:
        yield chunk
        if loop.time() > deadline:
            raise _TooSlow


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # a request the caller gave up on: its error is expected, never "unretrieved"


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


class FhirServerSource(DataSource):
    name = "the FHIR server"
    remote = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        access_token: str | None = None,
        *,
        guards: OriginGuards | None = None,
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
        self._guards = guards
        self._guard: OriginGuard | None = None

    @property
    def guard(self) -> OriginGuard:
        """The guard of this server's origin, looked up when the first request goes out: a call whose
        prefetch settles every key never asks the server, so it need not parse the URL for its guard."""
        if self._guard is None:
            self._guard = (self._guards or OriginGuards()).for_url(self.base_url)
        return self._guard

    async def prepare(self) -> None:
        made = getattr(self.client, "made", None)  # the service's pooled client, made once, off the event loop
        if made is not None:
            await made()

    async def fetch(self, queries: dict[str, str], deadline: float) -> dict[str, KeyResult]:
        keys = list(queries)
        results = await asyncio.gather(*(self._by_deadline(self.fetch_one(queries[k], deadline), deadline)
                                         for k in keys))
        return dict(zip(keys, results, strict=True))

    async def more_pages(self, bundle: dict[str, Any], deadline: float) -> KeyResult:
        async def follow() -> dict[str, Any]:
            await self.follow_pages(bundle, deadline)
            return bundle

        return await self._by_deadline(follow(), deadline)

    async def _by_deadline(self, work, deadline: float) -> KeyResult:
        """One key's result by ``deadline``: its value, or why not (never an exception)."""
        try:
            async with asyncio.timeout_at(deadline):
                return KeyResult.answered(await work)
        except TimeoutError:
            return KeyResult.failed("the FHIR server did not answer in time", timed_out=True)
        except SourceError as exc:
            return KeyResult.failed(str(exc))

    def _join(self, ref: str) -> str:
        try:  # a hostile fhirServer or next link ("http://[", port 99999) must be a 412, not a 500
            url = urljoin(self.base_url, ref)
            same = origin_of(url) == origin_of(self.base_url)
        except ValueError:
            raise SourceError("the FHIR server URL is not valid") from None  # no URL (patient id) in the chain
        if not same:
            raise SourceError("the FHIR server pointed to another host; not followed")
        return url

    async def _get(self, url: str, deadline: float | None = None) -> dict[str, Any] | None:
        url = self._join(url)
        is_read = "?" not in url.partition("#")[0] and not url.rstrip("/").endswith(_SEARCH_TYPES)
        raw = await self._request(url, is_read, deadline)
        if raw is None:
            return None
        if len(raw) > LARGE_ANSWER_BYTES:  # off the event loop; the caller still stops waiting at the deadline
            return await asyncio.get_running_loop().run_in_executor(None, self._parse, raw)
        return self._parse(raw)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SourceError("the FHIR server answered with something that is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise SourceError("the FHIR server answered with something that is not a FHIR resource")
        # The same structural bounds as a request body: a FHIR server is as untrusted as any caller.
        try:
            check_bounds(raw, self.max_depth, self.max_array)
        except BadRequest as exc:
            raise SourceError(f"the FHIR server answer broke the service's JSON bounds ({exc.message})") from None
        if data["resourceType"] == "OperationOutcome":
            raise SourceError("the FHIR server answered with an OperationOutcome")
        return data

    async def _request(self, url: str, is_read: bool, deadline: float | None) -> bytes | None:
        """The answer's bytes (None: a read that found nothing).

        The request runs in a task of its own that no one cancels: when the call's deadline passes, the
        caller stops waiting, and the request ends by itself moments later through httpx's own timeouts
        (set to the time left) or the deadline check between body chunks. httpcore can lose a pool slot
        for good when a task is cancelled at the wrong moment inside it (still so in 1.0.9, see
        docs/operations.md); this way it never is. The task holds the origin's place until the request has ended."""
        trial = await self.guard.acquire()
        self.requests_made += 1
        task = asyncio.ensure_future(self._send(url, is_read, deadline, trial))
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _send(self, url: str, is_read: bool, deadline: float | None, trial: bool = False) -> bytes | None:
        import httpx

        ok = False
        try:
            timeout = httpx.USE_CLIENT_DEFAULT
            if deadline is not None:
                timeout = httpx.Timeout(max(0.01, deadline - asyncio.get_running_loop().time()))
            async with self.client.stream("GET", url, headers=self.headers, follow_redirects=False,
                                          timeout=timeout) as resp:
                status = resp.status_code
                ok = status < 500
                if status == 404 and is_read:
                    return None  # a read of a resource that does not exist: known empty
                if status >= 300:
                    raise SourceError(f"the FHIR server answered HTTP {status}"
                                      + (" to a search (is fhirServer the FHIR base URL?)" if status == 404 else ""))
                raw = await self._read_capped(resp, deadline)
        except httpx.TimeoutException as exc:
            ok = False
            raise SourceError("the FHIR server did not answer in time") from exc
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # ValueError: httpx on host-less URLs
            ok = False
            raise SourceError(f"the FHIR server could not be reached ({type(exc).__name__})") from None
        except _TooSlow:
            ok = False
            raise SourceError("the FHIR server did not answer in time") from None
        finally:
            self.guard.record(ok, trial=trial)
            self.guard.release()
        return raw

    async def _read_capped(self, resp: httpx.Response, deadline: float | None = None) -> bytes:
        """The body, refused as soon as it passes ``max_bytes`` (never held whole when it is too large)."""
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise SourceError("the FHIR server answer was too large")
        chunks = resp.aiter_bytes() if deadline is None else _until(resp.aiter_bytes(), deadline)
        body = await join_limited(chunks, self.max_bytes)
        if body is None:
            raise SourceError("the FHIR server answer was too large")
        return body

    async def fetch_one(self, query: str, deadline: float | None = None) -> dict[str, Any] | None:
        """One query with its pages; raises :class:`SourceError`."""
        data = await self._get(query.lstrip("/"), deadline)
        if data is not None and data.get("resourceType") == "Bundle":
            await self.follow_pages(data, deadline)
        return data

    async def follow_pages(self, bundle: dict[str, Any], deadline: float | None = None) -> int:
        """Append the entries of ``next`` pages to ``bundle`` in place; returns pages read."""
        pages = 0
        url = next_link(bundle)
        entries = bundle.setdefault("entry", [])
        if not isinstance(entries, list):
            raise SourceError("a searchset Bundle has an entry that is not an array")
        while url and pages < self.max_pages:
            page = await self._get(url, deadline)
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
