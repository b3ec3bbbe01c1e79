"""This service as a SMART app: the treatment timeline, launched by the EHR from a card (docs/timeline.md).

Routes (on only when ``CDS_SMART_CLIENTS`` names at least one EHR):

* ``GET /smart/launch?iss=…&launch=…`` — the EHR opens this (from a card's ``smart`` link): the ``iss`` is
  checked against the allow-list, the EHR's SMART configuration read, and the browser sent to the EHR's
  authorization endpoint with PKCE (S256) and a ``state`` bound to the browser by a cookie;
* ``GET /smart/callback?code=…&state=…`` — the EHR sends the browser back here: the launch is taken
  (once), the code exchanged for a token on the server, the chart read and the timeline page returned;
* ``GET /smart/jwks.json`` — the public keys of confidential clients (``private_key_jwt``).

The modules behind them load at the first launch, not at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cds_service.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.smart_clients:
        return
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from cds_service.smart.clients import SmartClients, parse_smart_clients

    app.state.smart_clients = SmartClients(parse_smart_clients(settings.smart_clients, settings.trusted_issuers))
    app.state.smart_pending = None  # made at the first launch (cds_service.smart.launch.pending_of)

    async def launch(request: Request) -> Response:
        from cds_service.smart.launch import start

        return await start(request)

    async def callback(request: Request) -> Response:
        from cds_service.smart.launch import finish

        return await finish(request)

    async def jwks(request: Request) -> Response:
        import orjson

        from cds_service.smart.oauth import public_jwks

        body = public_jwks(request.app.state.smart_clients.clients.values())
        return Response(orjson.dumps(body), media_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})

    async def close(_app) -> None:
        pending = getattr(_app.state, "smart_pending", None)
        if pending is not None:
            await pending.close()

    # Plain routes: these pages are not part of the CDS Hooks API, so they stay out of the OpenAPI document.
    app.router.routes.extend([Route("/smart/launch", launch, methods=["GET"]),
                              Route("/smart/callback", callback, methods=["GET"]),
                              Route("/smart/jwks.json", jwks, methods=["GET"])])
    app.state.shutdown_hooks.append(close)
