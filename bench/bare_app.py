"""The floor: a bare Starlette endpoint that reads the body, parses it with orjson and answers a small JSON.

It does what any Python service must do per request (receive the body, parse it, serialise an answer)
and nothing else, under the same server settings as the service (uvicorn, uvloop + httptools, one
worker, ``gc.freeze()`` after startup). The service's numbers are reported as ratios against it.

Run: ``python -m uvicorn bench.bare_app:app --loop uvloop --http httptools --no-access-log``.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# About the size of a one-card answer, so response serialisation and sending are comparable.
_CARD = {
    "uuid": "00000000-0000-4000-8000-000000000000",
    "summary": "Bare endpoint: request parsed",
    "indicator": "info",
    "source": {"label": "bench floor"},
}


async def call(request: Request) -> Response:
    data = orjson.loads(await request.body())
    prefetch = data.get("prefetch") or {}
    card = dict(_CARD, detail=f"{len(prefetch)} prefetch keys")
    return Response(orjson.dumps({"cards": [card]}), media_type="application/json")


@asynccontextmanager
async def lifespan(app: Starlette):
    gc.collect()
    gc.freeze()  # same treatment as the service's lifespan, so the comparison is fair
    yield


app = Starlette(routes=[Route("/cds-services/{service_id}", call, methods=["POST"])], lifespan=lifespan)
