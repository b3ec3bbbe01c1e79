"""The hook call's short way through the ASGI stack.

A hook call from an EHR's server (no ``Origin`` header: not a browser, so CORS has nothing to add) goes
straight from the server to the hook handler, with what the skipped layers would have done done here:
the log context reset and the response counted (:func:`cds_service.metrics.request_done`), and an
exception answered by the application's own exception handlers. Every other request, a browser's
included, takes the full middleware stack and router. Those layers are a visible share of a small call's
cost (bench/stages.py, "framework"); this keeps them off the hot path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import structlog
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cds_service.metrics import request_done


class AppState(State):
    """``app.state`` whose entries are also plain attributes of the object.

    Starlette's State keeps its entries in a dict and reads them in ``__getattr__``, which Python calls only
    after the normal attribute lookup has failed: every read (a hook call makes a dozen: services, policy,
    workload, rule modes, audit, metrics ...) then costs a raised and dropped AttributeError, about 5,700
    instructions (callgrind) where a plain attribute costs a few hundred. Entries are written to both places,
    so the dict and the attributes always agree.
    """

    def __setattr__(self, key: str, value: object) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    def __setitem__(self, key: str, value: object) -> None:
        self.__setattr__(key, value)

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)


def fast_state(app) -> None:
    """Give ``app`` an :class:`AppState` holding what its state held."""
    state = AppState()
    for key in app.state:
        state[key] = app.state[key]
    app.state = state


HOOK_PATH = re.compile(r"/cds-services/(?P<service_id>[^/]+)")


class HookFastPath:
    def __init__(self, stack: ASGIApp, app, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.stack = stack
        self.app = app
        self.endpoint = endpoint

    def _hook_call(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        match = HOOK_PATH.fullmatch(scope["path"])
        if match is None:
            return None
        for name, _value in scope["headers"]:
            if name == b"origin":
                return None
        return match["service_id"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service_id = self._hook_call(scope)
        if service_id is None:
            await self.stack(scope, receive, send)
            return
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        scope["path_params"] = {"service_id": service_id}
        request = Request(scope, receive, send)
        status = 500
        try:
            try:
                response = await self.endpoint(request)
            except Exception as exc:  # noqa: BLE001 - answered exactly as the full stack would answer it
                response = await self._handle(request, exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            metrics = getattr(self.app.state, "metrics", None)
            if metrics is not None:
                request_done(metrics, scope, status, started)
            else:
                structlog.contextvars.clear_contextvars()

    async def _handle(self, request: Request, exc: Exception) -> Response:
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)
        raise exc


def install(app, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
    """Put :class:`HookFastPath` in front of the middleware stack the application builds."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return HookFastPath(build(), app, endpoint)

    app.build_middleware_stack = build_with_fast_path
