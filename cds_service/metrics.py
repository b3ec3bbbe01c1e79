"""Prometheus metrics at ``GET /metrics`` (text format, unauthenticated like ``/health``).

What is measured (all names prefixed ``cds_``):

* ``hook_duration_seconds{hook}``: time to answer a hook call (handler start to response body).
* ``fhir_fetch_duration_seconds`` / ``fhir_requests_total`` / ``fhir_fetch_failures_total``: the FHIR
  server fallback when prefetch is incomplete, failures included (they end in a 412).
* ``cards_total{rule,indicator}``: cards returned, by rule id and indicator.
* ``shadow_cards_total{rule,indicator}``: cards of rules in shadow mode (audited, never returned);
  ``rule_mode{rule,mode}``: 1 for each rule's configured mode (``CDS_RULES_FILE``).
* ``http_responses_total{endpoint,status}``: every response, 4xx and 5xx included; the timeline's launches
  are ``endpoint="smart_launch"`` (302: sent to the EHR to authorise) and timelines shown
  ``endpoint="smart_callback",status="200"``.
* ``auth_failures_total{reason}``: refused JWTs, by reason (called by the auth module).
* ``audit_rows_written_total{kind}``, ``audit_write_failures_total{kind}``, ``audit_rows_dropped_total{reason}``
  and ``audit_queue_depth``: the audit writer's health.

Several worker processes (``cds-service serve --workers N``) each hold their own counters, so every worker
writes its values to one directory (``PROMETHEUS_MULTIPROC_DIR``) and whichever worker answers
``/metrics`` reports the sum. ``cds-service serve --workers N`` sets this up itself: a temporary directory
for that run, removed when it stops, unless ``PROMETHEUS_MULTIPROC_DIR`` names one (then that directory is
emptied at start, as prometheus_client requires; use one directory per ``serve`` process).

Cost: one pure-ASGI middleware with pre-resolved label children; a few microseconds per request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from cds_service import logs
from cds_service.models import RULE_ID_EXTENSION

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logs.get_logger("cds_service.http")

HOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FHIR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1.0, 2.5, 5.0)
_MAX_LABEL = 80  # label values come partly from code (rule ids, auth reasons): keep them bounded


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> None:
    """Empty the multiprocess directory before workers start (called by ``cds-service serve``)."""
    path = multiprocess_dir()
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def own_multiprocess_dir(needed: bool) -> Iterator[str | None]:
    """For the lifetime of one ``serve`` run: the multiprocess directory, made (and removed afterwards) when
    ``needed`` and none is configured. Worker processes inherit it through the environment."""
    created = None
    if needed and not multiprocess_dir():
        created = tempfile.mkdtemp(prefix="cds-metrics-")
        os.environ[MULTIPROC_ENV] = created
    prepare_multiprocess_dir()
    try:
        yield multiprocess_dir()
    finally:
        if created:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(created, ignore_errors=True)


# The treatment timeline's SMART launch: a 302 from smart_launch is a launch begun from a card, a 200 from
# smart_callback a timeline shown.
_SMART = {"/smart/launch": "smart_launch", "/smart/callback": "smart_callback", "/smart/jwks.json": "smart_jwks"}


def endpoint_of(path: str) -> str:
    """A bounded label for a request path (raw paths would let a scanner create unbounded series)."""
    if path == "/cds-services":
        return "discovery"
    if path.startswith("/cds-services/"):
        rest = path[len("/cds-services/"):]
        if "/" not in rest:
            return "service"
        if rest.endswith("/feedback") and rest.count("/") == 1:
            return "feedback"
        return "other"
    if path in ("/health", "/ready", "/metrics"):
        return path[1:]
    if path.startswith("/fixtures"):
        return "fixtures"
    return _SMART.get(path, "other")


class Metrics:
    """The service's metric objects; one per process (prometheus_client registries are global)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        self.hook_seconds = Histogram("cds_hook_duration_seconds", "Time to answer a CDS Hooks call.",
                                      ["hook"], buckets=HOOK_BUCKETS, registry=reg)
        self.fhir_seconds = Histogram("cds_fhir_fetch_duration_seconds",
                                      "Time spent fetching missing prefetch data from the FHIR server.",
                                      buckets=FHIR_BUCKETS, registry=reg)
        self.fhir_requests = Counter("cds_fhir_requests_total", "HTTP requests made to FHIR servers.",
                                     registry=reg)
        self.fhir_failures = Counter("cds_fhir_fetch_failures_total",
                                     "FHIR fallback fetches that failed or timed out (answered 412).", registry=reg)
        self.cards = Counter("cds_cards_total", "Cards returned, by rule and indicator.", ["rule", "indicator"],
                             registry=reg)
        self.responses = Counter("cds_http_responses_total", "HTTP responses by endpoint and status.",
                                 ["endpoint", "status"], registry=reg)
        self.auth_failures = Counter("cds_auth_failures_total", "Refused authentication, by reason.", ["reason"],
                                     registry=reg)
        self.audit_rows = Counter("cds_audit_rows_written_total", "Audit rows stored.", ["kind"], registry=reg)
        self.audit_failures = Counter("cds_audit_write_failures_total",
                                      "Rows in audit writes that failed (a retried row counts again).", ["kind"],
                                      registry=reg)
        self.audit_drops = Counter("cds_audit_rows_dropped_total", "Audit rows given up on, by reason.",
                                   ["reason"], registry=reg)
        self.audit_queue = Gauge("cds_audit_queue_depth", "Card and hook-call rows waiting to be written.",
                                 registry=reg, multiprocess_mode="livesum")
        self.shadow_cards = Counter("cds_shadow_cards_total", "Cards of rules in shadow mode: computed and "
                                    "audited, never returned; by rule and indicator.", ["rule", "indicator"],
                                    registry=reg)
        self.rule_mode = Gauge("cds_rule_mode", "1 for each rule's configured mode (on, shadow, off; "
                               "CDS_RULES_FILE).", ["rule", "mode"], registry=reg, multiprocess_mode="max")
        self._children: dict[tuple, Any] = {}

    def _child(self, metric, *labels: str):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            bounded = tuple(str(v)[:_MAX_LABEL] for v in labels)
            child = metric.labels(*bounded)
            self._children[(id(metric), *bounded)] = child
        return child

    # ---- called by the application
    def hook_answered(self, hook: str, seconds: float, cards, stats=None, shadow=()) -> None:
        self._child(self.hook_seconds, hook).observe(seconds)
        for card in cards:
            rule = (card.extension or {}).get(RULE_ID_EXTENSION) or "unlabelled"
            self._child(self.cards, rule, card.indicator).inc()
        for card in shadow:
            rule = (card.extension or {}).get(RULE_ID_EXTENSION) or "unlabelled"
            self._child(self.shadow_cards, rule, card.indicator).inc()

    def rule_modes(self, modes) -> None:
        """Publish each rule's mode (one series per rule and mode, 1 for the configured one)."""
        from cds_service.governance.modes import MODES

        for rule, mode in modes.modes.items():
            for m in MODES:
                self._child(self.rule_mode, rule, m).set(1 if m == mode else 0)

    def fhir_fetch(self, stats) -> None:
        if stats.fhir_requests:
            self.fhir_requests.inc(stats.fhir_requests)
            self.fhir_seconds.observe(stats.fhir_seconds)
        if stats.fhir_failed:
            self.fhir_failures.inc()

    def response(self, endpoint: str, status: int) -> None:
        self._child(self.responses, endpoint, str(status)).inc()

    def auth_failed(self, reason: str) -> None:
        self._child(self.auth_failures, reason or "unknown").inc()

    # ---- called by the audit writer
    def audit_written(self, kind: str, n: int) -> None:
        self._child(self.audit_rows, kind).inc(n)

    def audit_failed(self, kind: str, n: int) -> None:
        self._child(self.audit_failures, kind).inc(n)

    def audit_dropped(self, reason: str, n: int) -> None:
        self._child(self.audit_drops, reason).inc(n)

    def audit_queue_depth(self, n: int) -> None:
        self.audit_queue.set(n)


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        if multiprocess_dir():
            Path(multiprocess_dir()).mkdir(parents=True, exist_ok=True)
        _metrics = Metrics()
    return _metrics


def exposition() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class ObservabilityMiddleware:
    """Counts every response by status, records FHIR fetch metrics, and logs refused requests with timing.

    Pure ASGI (no BaseHTTPMiddleware task per request). Log context (structlog contextvars) is reset per
    request, so the ``hookInstance`` the handler binds appears on every line of that request only.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        status = 500  # what the client gets if the app raises before starting a response

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            request_done(self.metrics, scope, status, started)


def request_done(metrics: Metrics, scope, status: int, started: float) -> None:
    """Count the response, record FHIR fetch metrics, log a refused request, reset the log context."""
    endpoint = endpoint_of(scope.get("path", ""))
    metrics.response(endpoint, status)
    stats = (scope.get("state") or {}).get("gather_stats")
    if stats is not None:
        metrics.fhir_fetch(stats)
    if status >= 400:
        # Path and ids stay out: a path can carry anything a caller typed.
        log.info("request", method=scope.get("method"), endpoint=endpoint, status=status,
                 ms=round((time.perf_counter() - started) * 1000, 2))
    structlog.contextvars.clear_contextvars()


def install(app, settings) -> None:
    from starlette.responses import Response

    metrics = get_metrics()
    app.state.metrics = metrics
    metrics.rule_modes(app.state.rule_modes)

    def metrics_endpoint() -> Response:  # sync: FastAPI runs it in a thread (multiprocess mode reads files)
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)

    if multiprocess_dir():
        async def _mark_dead(_app) -> None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # drop this worker's live gauges

        app.state.shutdown_hooks.append(_mark_dead)
