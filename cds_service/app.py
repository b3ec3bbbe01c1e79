"""The HTTP application: request -> auth -> gather FHIR data -> facts -> rules -> cards -> response.

Each step lives in its own module; this one only wires them and maps errors to OperationOutcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Route, compile_path

from cds_service import __version__, logs, openapi
from cds_service.audit import CallFacts
from cds_service.auth import authenticate
from cds_service.body import read_json
from cds_service.config import Settings, get_settings
from cds_service.discovery import discovery_document
from cds_service.errors import NotFound, ServiceError, outcome_response
from cds_service.feedback import parse_feedback
from cds_service.governance.modes import RuleModes
from cds_service.hooks import evaluation_time, parse_call
from cds_service.models import CDSResponse, DiscoveryResponse, dump
from cds_service.response import answer
from cds_service.services import registry
from cds_service.sources.gather import GatherPolicy, GatherStats, call_sources, gather
from cds_service.sources.origin import OriginGuards
from cds_service.store.base import StoreError
from cds_service.workload import Workload, WorkloadPolicy

log = logs.get_logger("cds_service.app")

JSON = "application/json"
READY_TIMEOUT = 3.0
FHIR_POOL_SIZE = 100
HTTP_CLIENT_DELAY = 1.0  # seconds after the start: the pooled FHIR client is made then (PooledClient)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


class PooledClient:
    """The one pooled ``httpx.AsyncClient`` of FHIR fallback calls (also JWKS and SMART reads), made on first use.

    Making it (importing httpx, loading the TLS trust store) costs about a tenth of a second of CPU, which a first
    hook call served from its prefetch need not wait for: :func:`lifespan` makes it :data:`HTTP_CLIENT_DELAY` s
    after the start, in a worker thread, so the event loop keeps answering meanwhile. A FHIR fallback call that
    comes before waits for it to be made in a worker thread too (:meth:`made`), outside its deadline. Every
    attribute not defined here is the client's.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None
        self._making = threading.Lock()  # one client, whichever thread asks first

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._making:
                if self._client is None:
                    self._client = self._make()
                client = self._client
        return client

    async def made(self) -> None:
        """The client exists once this returns; made in a worker thread when it does not yet."""
        if self._client is None:
            await asyncio.get_running_loop().run_in_executor(None, self.get)

    def __getattr__(self, name: str) -> Any:
        if name in ("_make", "_client", "_making"):  # not set yet (a copy in the making): never a client's
            raise AttributeError(name)
        return getattr(self.get(), name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _http_client(settings: Settings):
    # Timeouts bound each call, the request deadline bounds them all. The origin guards keep requests in
    # flight at or below the pool size, so no request ever waits inside the pool (cds_service.sources.origin).
    import httpx

    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.fhir_deadline_seconds, connect=min(1.0, settings.fhir_deadline_seconds)),
        limits=httpx.Limits(max_connections=FHIR_POOL_SIZE, max_keepalive_connections=20),
        follow_redirects=False,
        trust_env=False,
    )


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    app.state.http = PooledClient(functools.partial(_http_client, settings))
    app.state.fhir_guards = OriginGuards(total=FHIR_POOL_SIZE)
    for hook in app.state.startup_hooks:
        await hook(app)
    from cds_service.clinical import engine

    engine.warm_up()
    for start in app.state.started_hooks:  # after everything is loaded (cds-service serve tunes the GC here)
        start()
    loop = asyncio.get_running_loop()
    making: list[asyncio.Future] = []
    make_http = loop.call_later(HTTP_CLIENT_DELAY,
                                lambda: making.append(loop.run_in_executor(None, app.state.http.get)))
    try:
        yield
    finally:
        make_http.cancel()
        for made in making:  # a client made after its close would stay open
            with contextlib.suppress(Exception):
                await made
        for hook in app.state.shutdown_hooks:
            await hook(app)
        await app.state.http.aclose()


class DeferredAPIRoute(APIRoute):
    """An APIRoute whose FastAPI machinery (the models of its parameters and response, its handler) is built
    when the route is first used (a request on its path, the OpenAPI document), not when it is declared.

    Building them costs tens of milliseconds for the service's routes (and loads ``pydantic.v1``, which FastAPI
    imports to check the models), all before the first hook call, which no route of the router serves
    (:mod:`cds_service.edge`). Until then the route has its path and endpoint, so the router can tell which
    requests are its own; any other attribute asked for builds it first, as ``APIRoute`` would have.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        self.path = path
        self.endpoint = endpoint
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        self._options = options

    def __getattr__(self, name: str) -> Any:  # only for attributes not set: the route is not built yet
        options = self.__dict__.pop("_options", None)
        if options is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        APIRoute.__init__(self, self.path, self.endpoint, **options)
        return getattr(self, name)


def create_app(settings: Settings | None = None) -> FastAPI:
    from fastapi_offline import FastAPIOffline

    settings = settings or get_settings()
    logs.configure(settings.log_level, settings.log_json)
    # /docs with the Swagger UI assets served by this service (no CDN): see openapi.py. No /redoc: its bundle
    # fetches its own logo from a CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="Neurosarcoidosis CDS Hooks service",
        version=__version__,
        description="CDS Hooks 2.0.1 service: neurosarcoidosis treatment ladder and IVIG safety.",
        lifespan=lifespan,
        static_url="/docs-static",
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.router.route_class = DeferredAPIRoute
    from cds_service import edge

    edge.fast_state(app)
    app.state.settings = settings
    app.state.services = registry(settings)
    _install_governance(app, settings)
    app.state.gather_policy = GatherPolicy.from_settings(settings)
    app.state.log_limited = logs.RateLimited(every=10.0)
    app.state.startup_hooks = []
    app.state.started_hooks = []  # plain callables run once the application is loaded
    app.state.shutdown_hooks = []
    app.state.authenticator = None  # set by cds_service.auth when trusted issuers are configured
    app.state.audit = None  # set by cds_service.audit
    app.state.workload = Workload(WorkloadPolicy.from_settings(settings))
    app.state.shutdown_hooks.append(_close_workload)

    _install_error_handlers(app)
    _install_routes(app)
    openapi.install(app, settings)
    _install_extensions(app, settings)

    # CORS outermost, so its headers are on error responses too; preflight never reaches auth. A browser
    # page on a public origin (the public CDS Hooks sandbox) calling this service on localhost or a private
    # address first asks with Access-Control-Request-Private-Network: answered for the allowed origins.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept"],
        allow_private_network=settings.cors_private_network,
        expose_headers=["WWW-Authenticate"],
        max_age=600,
    )
    return app


def _install_governance(app: FastAPI, settings: Settings) -> None:
    """Site rule modes (``CDS_RULES_FILE``) and the current version of every rule (cds_service/governance)."""
    from cds_service.config import ConfigurationError
    from cds_service.governance.modes import RuleModesError, load_rule_modes
    from cds_service.governance.versions import current_versions

    try:
        app.state.rule_modes = load_rule_modes(settings.rules_file)
    except RuleModesError as exc:  # `cds-service serve` reports it before this; an embedding caller gets it here
        raise ConfigurationError([f"Configuration error in CDS_RULES_FILE: expected a YAML file of rule modes "
                                  f"(on, shadow, off) ({exc})."]) from None
    app.state.rule_versions = current_versions()
    off, shadow = sorted(app.state.rule_modes.off), sorted(app.state.rule_modes.shadow)
    if off or shadow:
        log.info("rule_modes", file=str(settings.rules_file), off=off, shadow=shadow)


async def _close_workload(app: FastAPI) -> None:
    app.state.workload.close()


def _install_extensions(app: FastAPI, settings: Settings) -> None:
    """The parts beside the request path, each in its own module with an ``install(app, settings)``."""
    from cds_service import audit, auth, metrics, preview, smart

    for module in (auth, audit, metrics, preview, smart):
        module.install(app, settings)


# --------------------------------------------------------------------------- errors
def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if exc.status == 401:
            reason = getattr(exc, "reason", "unknown")
            log.warning("auth_refused", reason=reason, path=request.url.path)
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                from cds_service.auth.verify import reason_category

                metrics.auth_failed(reason_category(reason))
        elif exc.status == 503 and hasattr(exc, "reason"):  # auth.AuthUnavailable: JWKS or replay cache down
            # an outage fails every request: one line per 10 s per application, with the count suppressed
            request.app.state.log_limited(log.error, "auth_unavailable", reason=exc.reason, path=request.url.path)
        elif exc.status >= 400:
            log.info("request_refused", status=exc.status, path=request.url.path, message=exc.message)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errs = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()[:5])
        return outcome_response(f"Invalid request: {errs}.", 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        messages = {404: f"No resource at {request.url.path}.", 405: f"Method {request.method} is not allowed here."}
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome_response(messages.get(exc.status_code, str(exc.detail)), exc.status_code, code,
                                dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # last resort; should not happen
        log.error("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return outcome_response("The service failed unexpectedly; the error was logged.", 500, "exception")


# --------------------------------------------------------------------------- routes
def _install_routes(app: FastAPI) -> None:
    settings: Settings = app.state.settings

    @app.get("/cds-services", response_model=DiscoveryResponse, tags=["CDS Hooks"],
             summary="Discovery: the services offered and their prefetch templates")
    async def discovery(request: Request) -> Response:
        await authenticate(request, "/cds-services")
        return _json(dump(discovery_document(request.app.state.services, request.app.state.rule_modes)))

    async def call_service(request: Request) -> Response:
        started = time.perf_counter()
        service_id: str = request.path_params["service_id"]
        client = await authenticate(request, f"/cds-services/{service_id}")  # 401 before 404: no probing
        service = request.app.state.services.get(service_id)
        if service is None:
            raise NotFound(f"There is no CDS service with id '{service_id}'.")
        try:
            return await answer_call(request, service, client, started)
        except ServiceError as exc:  # a refused call is a call too: its row keeps the denominators honest
            audit = request.app.state.audit
            if audit is not None:
                audit.cards_issued(service=service.id, hook=service.hook, hook_instance="", patient_id=None,
                                   cards=(), call=CallFacts(status=exc.status,
                                                            duration_s=time.perf_counter() - started))
            raise

    async def answer_call(request: Request, service, client, started: float) -> Response:
        workload: Workload = request.app.state.workload  # large calls work off the event loop
        data = await read_json(request, limit=settings.max_body_bytes, max_depth=settings.max_json_depth,
                               max_array=settings.max_array_length, workload=workload)
        call = parse_call(service, data)
        logs.bind(hookInstance=call.hook_instance)  # on every log line of this request, errors included
        workload.check(call)
        stats = GatherStats()
        policy: GatherPolicy = request.app.state.gather_policy
        request.state.gather_stats = stats  # the metrics middleware reads it, also when gather fails (412)
        record = await gather(call, call_sources(call, policy, http=request.app.state.http,
                                                 guards=request.app.state.fhir_guards,
                                                 fhir_allowed=getattr(client, "fhir_allowed", None)),
                              policy, stats)
        if not settings.auth_enabled:  # fixtures pin "now" so their dates stay meaningful; never with auth on
            record.now = evaluation_time(call.envelope.extension) or record.now
        links = None
        if settings.smart_clients:  # the treatment timeline link (cds_service/smart/links.py)
            from cds_service.smart.links import for_call

            issuer = getattr(client, "issuer", None)
            links = functools.partial(for_call, settings=settings, issuer=issuer, request_base=str(request.base_url))
        modes: RuleModes = request.app.state.rule_modes
        if workload.large_record(record):
            result = await workload.run(answer, record, service, call.hook_instance, links, modes)
        else:
            result = answer(record, service, call.hook_instance, links, modes)
        elapsed = time.perf_counter() - started
        audit = request.app.state.audit
        if audit is not None:  # queued; written after the response, in batches
            audit.cards_issued(service=service.id, hook=call.hook, hook_instance=call.hook_instance,
                               patient_id=call.patient_id, cards=result.cards, shadow_cards=result.shadow,
                               call=CallFacts(duration_s=elapsed, ladder_orders=result.ladder_orders,
                                              ig_orders=result.ig_orders))
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.hook_answered(call.hook, elapsed, result.cards, stats, shadow=result.shadow)
        logs.hot_info(log, "hook_answered", service=service.id, hook=call.hook, hookInstance=call.hook_instance,
                      cards=len(result.cards), shadow=len(result.shadow), prefetched=stats.prefetched,
                      fetched=stats.fetched, fhir_ms=round(stats.fhir_seconds * 1000, 1),
                      ms=round(elapsed * 1000, 2), notes=len(record.notes))
        return Response(result.body, media_type=JSON)

    # The hook call is the hot path and reads its body as raw bytes, so FastAPI's per-request dependency
    # and parameter machinery would have nothing to do but still cost time on every call: it is served by a
    # plain Starlette route (same exception handlers and middleware). The APIRoute twin is never routed; it
    # only describes the endpoint in the OpenAPI document.
    app.router.routes.append(Route("/cds-services/{service_id}", call_service, methods=["POST"]))
    from cds_service import edge

    edge.install(app, call_service)
    app.state.documented_only = [DeferredAPIRoute(
        "/cds-services/{service_id}", _documented(call_service), methods=["POST"], response_model=CDSResponse,
        tags=["CDS Hooks"], summary="Call a service (any listed by discovery)",
        responses={400: {}, 401: {}, 404: {}, 412: {}, 413: {}, 415: {}})]

    @app.post("/cds-services/{service_id}/feedback", tags=["CDS Hooks"],
              summary="Feedback on cards (accepted / overridden)",
              responses={400: {}, 401: {}, 404: {}, 413: {}, 415: {}, 503: {}})
    async def feedback(service_id: str, request: Request) -> Response:
        await authenticate(request, f"/cds-services/{service_id}/feedback")
        service = request.app.state.services.get(service_id)
        if service is None:
            raise NotFound(f"There is no CDS service with id '{service_id}'.")
        data = await read_json(request, limit=settings.max_body_bytes, max_depth=settings.max_json_depth,
                               max_array=settings.max_array_length)
        items = parse_feedback(data)
        audit = request.app.state.audit
        stored = 0
        if audit is not None:  # awaited: a 200 means stored (idempotently); a database outage is a 503
            stored = await audit.feedback_received(service=service.id, items=items)
        for item in items:
            code, _ = item.reason_code()
            log.info("feedback", service=service.id, card=item.card, outcome=item.outcome, reason=code,
                     accepted=len(item.acceptedSuggestions or ()))
        # "received": items in the POST; "stored": new rows (a repeat stores nothing); then the items by
        # outcome, so an overridden card is never reported as accepted.
        accepted = sum(1 for item in items if item.outcome == "accepted")
        return _json({"received": len(items), "stored": stored, "accepted": accepted,
                      "overridden": len(items) - accepted})

    @app.get("/health", tags=["Operations"], summary="Liveness: the process answers (no dependency checked)")
    async def health() -> Response:
        return _json({"status": "ok", "version": __version__})

    @app.get("/ready", tags=["Operations"], summary="Readiness: the audit database and the replay cache answer",
             responses={503: {}})
    async def ready(request: Request) -> Response:
        """200 when this instance can take traffic: its audit database and, with authentication on, its JWT
        replay cache answer within a few seconds (without the cache every signed call is refused). A load
        balancer sends hook calls only to ready instances; `/health` stays a cheap liveness check."""
        authenticator = getattr(request.app.state, "authenticator", None)
        if authenticator is not None:
            from cds_service.replay import ReplayCacheUnavailable

            reason = await _answers(authenticator.replay.ping, ReplayCacheUnavailable)
            if reason is not None:
                log.warning("not_ready", reason=f"replay cache: {reason}")
                return outcome_response(f"Not ready: the JWT replay cache cannot be reached ({reason}); signed "
                                        "calls are refused until it answers.", 503, "transient", {"Retry-After": "5"})
        audit = request.app.state.audit
        if audit is not None:
            reason = await _answers(audit.store.ping, StoreError)
            if reason is not None:
                log.warning("not_ready", reason=reason)
                return outcome_response(f"Not ready: the audit database cannot be reached ({reason}).", 503,
                                        "transient", {"Retry-After": "5"})
        return _json({"status": "ready", "version": __version__})


async def _answers(check, errors: type[Exception]) -> str | None:
    """Why ``check()`` failed (its error, or no answer within the readiness timeout); None when it answered."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await check()
    except errors as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT:g} s"
    return None


def _documented(endpoint):
    """The signature FastAPI documents for a Starlette endpoint that takes only the request."""

    async def described(service_id: str, request: Request) -> Response:  # pragma: no cover - never routed
        return await endpoint(request)

    described.__doc__ = endpoint.__doc__
    return described
