"""The pooled FHIR client is made after the start, off the event loop: hook calls are answered meanwhile, one
client is made whoever asks first, and shutdown closes the one made in the background."""

import asyncio
import threading
import time

import httpx
from test_app import SELECT, hook_request

from cds_service import app as app_module
from cds_service.app import PooledClient, create_app
from cds_service.config import Settings

MAKING = 0.6  # seconds the stand-in takes to make the client (importing httpx and the trust store take ~0.1)


def _slow_client(made: list):
    def make(settings):
        time.sleep(MAKING)
        client = httpx.AsyncClient()
        made.append(client)
        return client
    return make


def test_hook_calls_are_answered_while_the_fhir_client_is_made(tmp_path, monkeypatch):
    made: list[httpx.AsyncClient] = []
    monkeypatch.setattr(app_module, "_http_client", _slow_client(made))
    monkeypatch.setattr(app_module, "HTTP_CLIENT_DELAY", 0.0)
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, trusted_issuers={}, database_url=None,
                              log_json=False))

    async def scenario():
        async with app.router.lifespan_context(app):
            started = time.monotonic()
            await asyncio.sleep(0.05)  # the client is being made now
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds") as c:
                resp = await c.post(SELECT, json=hook_request())
            waited = time.monotonic() - started
        return resp, waited

    resp, waited = asyncio.run(scenario())
    assert resp.status_code == 200, resp.text
    assert waited < MAKING / 2, f"the hook call waited {waited:.2f} s for the FHIR client to be made"
    assert len(made) == 1 and made[0].is_closed  # shutdown waited for the client and closed it


def test_one_client_is_made_when_two_threads_ask_at_once():
    made: list[object] = []

    def make():
        time.sleep(0.05)
        made.append(object())
        return made[-1]

    pooled = PooledClient(make)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(pooled.get())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got == made * 4


def test_a_first_fallback_call_waits_for_the_client_off_the_loop_and_outside_its_deadline(tmp_path, monkeypatch):
    """A call that needs the FHIR server before the background has made the client: the client is made in a
    worker thread (other requests are answered meanwhile) and its making does not eat the call's deadline."""
    def fhir(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": []})

    def make(settings):
        time.sleep(MAKING)  # longer than the 0.5 s deadline
        return httpx.AsyncClient(transport=httpx.MockTransport(fhir))

    monkeypatch.setattr(app_module, "_http_client", make)
    monkeypatch.setattr(app_module, "HTTP_CLIENT_DELAY", 60.0)  # the background never gets to it
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, trusted_issuers={}, database_url=None,
                              log_json=False))
    body = hook_request(fhirServer="http://fhir.test/r4")
    body.pop("prefetch")

    async def scenario():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds") as c:
                call = asyncio.ensure_future(c.post(SELECT, json=body))
                await asyncio.sleep(0.1)  # the client is being made now
                started = time.monotonic()
                health = await c.get("/health")
                health_wait = time.monotonic() - started
                return await call, health, health_wait

    resp, health, health_wait = asyncio.run(scenario())
    assert resp.status_code == 200, resp.text
    assert health.status_code == 200 and health_wait < MAKING / 2, f"/health waited {health_wait:.2f} s"
