"""The FHIR fallback keeps its promise: optional keys never fail a call, a 404 on a search is a failure,
a dead origin is cut off by its circuit breaker, and the connection pool cannot be jammed by cancellations."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx
from test_sources import FHIR, FULL, call, fetch, run, searchset

from cds_service.errors import PreconditionFailed
from cds_service.sources.fhir_server import FhirServerSource
from cds_service.sources.origin import OriginGuards

WITHOUT_OPTIONAL = {k: v for k, v in FULL.items()
                    if k not in ("allergies", "medicationAdministrations", "devices", "encounters")}


def test_a_missing_optional_key_with_a_fhir_server_off_the_allow_list_is_a_note_not_a_412():
    prefetch = {k: v for k, v in FULL.items() if k != "devices"}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=searchset()))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient(), fhir_allowed=lambda url: False))
    assert not route.called
    assert any("devices" in n for n in record.notes)
    assert record.resources["Condition"][0]["id"] == "c1"


def test_a_required_key_with_a_fhir_server_off_the_allow_list_is_still_a_412():
    prefetch = {k: v for k, v in FULL.items() if k != "conditions"}
    with pytest.raises(PreconditionFailed, match="allow-list"):
        run(fetch(call(prefetch), http=httpx.AsyncClient(), fhir_allowed=lambda url: False))


def test_a_slow_optional_key_is_a_note_even_when_it_runs_into_the_deadline():
    async def hang(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json=searchset())

    for _ in range(4):  # was a 412 four times out of four
        with respx.mock as mock:
            mock.get(url__startswith=FHIR).mock(side_effect=hang)
            record = run(fetch(call(WITHOUT_OPTIONAL), http=httpx.AsyncClient(), deadline=0.2))
        assert any("not available from the FHIR server" in n for n in record.notes)


def test_a_404_on_a_search_is_a_412_not_no_data():
    prefetch = {"patient": FULL["patient"]}
    with respx.mock as mock:
        mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(404))
        with pytest.raises(PreconditionFailed, match="404 to a search"):
            run(fetch(call(prefetch), http=httpx.AsyncClient()))


def test_a_404_on_a_read_is_known_empty():
    prefetch = {k: v for k, v in FULL.items() if k != "patient"}
    with respx.mock as mock:
        mock.get(f"{FHIR}/Patient/p1").mock(return_value=httpx.Response(404))
        record = run(fetch(call(prefetch), http=httpx.AsyncClient()))
    assert record.patient is None


def test_the_circuit_opens_after_failures_and_a_dead_origin_costs_no_request():
    guards = OriginGuards(min_requests=3, open_seconds=60)

    async def scenario():
        with respx.mock as mock:
            route = mock.get(url__startswith=FHIR).mock(return_value=httpx.Response(503))
            src = FhirServerSource(httpx.AsyncClient(), FHIR, guards=guards)
            first = await src.fetch({"a": "Condition?patient=p1", "b": "Condition?patient=p2",
                                     "c": "Condition?patient=p3"}, asyncio.get_running_loop().time() + 1)
            assert route.call_count == 3 and all(r.reason.endswith("HTTP 503") for r in first.values())
            later = await FhirServerSource(httpx.AsyncClient(), FHIR, guards=guards).fetch(
                {"a": "Condition?patient=p1"}, asyncio.get_running_loop().time() + 1)
            assert route.call_count == 3  # nothing sent
            assert "not answering" in later["a"].reason
            assert guards.for_url(FHIR).state == "open"

    run(scenario())


def test_the_circuit_lets_one_trial_through_and_closes_on_success():
    now = [0.0]
    guards = OriginGuards(min_requests=2, open_seconds=5, clock=lambda: now[0])

    async def scenario():
        with respx.mock as mock:
            route = mock.get(url__startswith=FHIR).mock(
                side_effect=[httpx.Response(500), httpx.Response(500), httpx.Response(200, json=searchset())])
            src = FhirServerSource(httpx.AsyncClient(), FHIR, guards=guards)
            deadline = asyncio.get_running_loop().time() + 1
            await src.fetch({"a": "Condition?x=1", "b": "Condition?x=2"}, deadline)
            assert guards.for_url(FHIR).state == "open"
            now[0] = 6.0
            assert guards.for_url(FHIR).state == "half-open"
            result = await src.fetch({"a": "Condition?x=3"}, asyncio.get_running_loop().time() + 1)
            assert result["a"].settled and route.call_count == 3
            assert guards.for_url(FHIR).state == "closed"

    run(scenario())


# --------------------------------------------------------------------------- the pool under cancellation
class _Server:
    """A loopback HTTP server: ``hang`` holds every request open, otherwise it answers an empty searchset."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/fhir"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"resourceType": "Bundle", "type": "searchset", "entry": []}'
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                self.requests += 1
                if self.hang:
                    await asyncio.sleep(3600)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def test_cancelling_requests_under_contention_never_jams_the_pool():
    """Many calls to a hanging server, all cut by their deadline while more wait than the pool holds (the
    situation in which httpcore 1.0.9 leaks pool slots); afterwards a healthy server still gets every request."""
    pool = 4
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                               timeout=httpx.Timeout(5.0))
    guards = OriginGuards(total=pool, per_origin=pool, min_requests=10**9)  # breaker out of the way
    loop = asyncio.get_running_loop()
    try:
        async with _Server(hang=True) as dead:
            for round_ in range(3):
                calls = [FhirServerSource(client, dead, guards=guards).fetch(
                    {f"k{i}": f"Condition?patient=p{i}" for i in range(6)}, loop.time() + 0.05 + 0.01 * (n % 5))
                    for n in range(30)]
                started = loop.time()
                results = await asyncio.gather(*calls)
                assert loop.time() - started < 3.0, f"round {round_}: calls outlived their deadlines"
                assert all(not r.settled for res in results for r in res.values())
        async with _Server(hang=False) as healthy:
            server = healthy
            results = await asyncio.gather(*(FhirServerSource(client, server, guards=guards).fetch(
                {"c": "Condition?patient=p1"}, loop.time() + 5) for _ in range(20)))
        assert all(r["c"].settled for r in results), [r["c"].reason for r in results if not r["c"].settled]
    finally:
        await client.aclose()


def test_one_slow_call_does_not_cut_off_a_server_that_answers_the_others():
    """All keys of one call miss its deadline; the server answers the calls before and after it.

    Counted per request, the one slow call alone was 8 consecutive failures and opened the circuit, so
    every call of the next 5 s got a 412 without asking a server that was answering (a benchmark under
    load showed hundreds of such 412s where the service without a breaker had a handful)."""
    guards = OriginGuards()
    slow = {"on": False}

    async def answer(request):
        if slow["on"]:
            await asyncio.sleep(1)
        return httpx.Response(200, json=searchset())

    async def scenario():
        keys = {f"k{i}": f"Condition?patient=p{i}" for i in range(8)}
        with respx.mock as mock:
            mock.get(url__startswith=FHIR).mock(side_effect=answer)
            client = httpx.AsyncClient()

            async def one_call(deadline: float = 1.0):
                source = FhirServerSource(client, FHIR, guards=guards)
                return await source.fetch(keys, asyncio.get_running_loop().time() + deadline)

            for _ in range(3):
                assert all(r.settled for r in (await one_call()).values())
            slow["on"] = True
            late = await one_call(deadline=0.1)
            assert all(r.timed_out for r in late.values())
            await asyncio.sleep(1.1)  # the late requests end (they are never cancelled) and are counted
            slow["on"] = False
            after = await one_call()
            assert all(r.settled for r in after.values()), {k: r.reason for k, r in after.items()}
            assert guards.for_url(FHIR).state == "closed"

    run(scenario())


def test_the_circuit_opens_on_a_share_of_failures_within_its_window():
    now = [100.0]
    guard = OriginGuards(window_seconds=10, min_requests=10, failure_ratio=0.5, clock=lambda: now[0]).for_url(FHIR)
    for _ in range(9):
        guard.record(False)
    assert guard.state == "closed"  # fewer requests than the minimum: no verdict yet
    for _ in range(12):
        guard.record(True)
    for _ in range(2):
        guard.record(False)
    assert guard.state == "closed"  # 11 of 23 failed: under half
    now[0] += 11  # the window has moved on: the earlier outcomes are forgotten
    for _ in range(6):
        guard.record(True)
    for _ in range(5):
        guard.record(False)
    assert guard.state == "closed"  # 5 of 11
    guard.record(False)
    assert guard.state == "open"  # 6 of 12


def test_requests_waiting_for_a_place_give_it_up_when_the_circuit_opens():
    guards = OriginGuards(per_origin=1, min_requests=1)
    guard = guards.for_url(FHIR)

    async def scenario():
        assert await guard.acquire() is False  # the only place
        waiting = asyncio.ensure_future(guard.acquire())
        await asyncio.sleep(0)
        guard.record(False)  # the request holding the place failed: the circuit opens
        guard.release()
        with pytest.raises(Exception, match="not answering"):
            await waiting

    run(scenario())
