"""``/smart/launch`` and ``/smart/callback``: the EHR launch, from the card's link to the timeline page.

Nothing secret outlives the request that uses it, and nothing secret is logged: the access token lives
only in :func:`finish`, the ``code``, ``state`` and ``launch`` only in the URLs the browser carries, and the
pending launch is sealed, single-use and short-lived (:mod:`cds_service.smart.session`,
:mod:`cds_service.smart.pending`). Log lines name the EHR's issuer, a reason code and timings, never a
patient. Every page, error pages included, carries the CSP and framing headers of :mod:`cds_service.timeline.page`.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cds_service import logs
from cds_service.smart.clients import SmartClient, SmartClients
from cds_service.smart.oauth import LaunchRefused, authorize_url, discover, exchange_code
from cds_service.smart.pending import PendingLaunches, PendingUnavailable, make_pending_launches
from cds_service.smart.session import (
    LaunchSecrets,
    clear_cookie_header,
    cookie_name,
    seal,
    set_cookie_header,
    store_key,
    unseal,
)
from cds_service.timeline import page

log = logs.get_logger("cds_service.smart")

DISCOVERY_SECONDS = 5.0
TOKEN_SECONDS = 10.0
MAX_PARAM = 2048
AGAIN = "Open the timeline again from the card in the EHR."


def pending_of(request: Request) -> PendingLaunches:
    state = request.app.state
    if state.smart_pending is None:
        state.smart_pending = make_pending_launches(state.settings)
    return state.smart_pending


def base_url(request: Request) -> str:
    configured = request.app.state.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")


def _refusal(exc: LaunchRefused, ancestors: tuple[str, ...], *, step: str, issuer: str | None = None,
             cookie: str | None = None) -> Response:
    log.warning("smart_launch_refused", step=step, reason=exc.reason, status=exc.status, issuer=issuer)
    resp = HTMLResponse(page.message_page("The treatment timeline cannot be shown", exc.message, AGAIN),
                        status_code=exc.status, headers=page.headers(ancestors))
    if cookie:
        resp.headers.append("Set-Cookie", clear_cookie_header(cookie))
    return resp


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_PARAM:
        raise LaunchRefused(f"The {name} parameter is too long.", f"{name}_too_long")
    return value


async def start(request: Request) -> Response:
    clients: SmartClients = request.app.state.smart_clients
    every = clients.all_frame_ancestors()
    try:
        iss, launch = _param(request, "iss"), _param(request, "launch")
        if iss is None or launch is None:
            raise LaunchRefused("This page is opened by the EHR from a card's link, which adds the EHR's address "
                                "(iss) and a launch id (launch); one of them is missing.", "missing_iss_or_launch")
        client = clients.for_iss(iss)
        if client is None:
            raise LaunchRefused("This EHR is not allowed to open the treatment timeline: its FHIR server (iss) is "
                                "not on this service's list.", "iss_not_allowed", 403)
    except LaunchRefused as exc:
        return _refusal(exc, every, step="launch")
    loop = asyncio.get_running_loop()
    try:
        config = await discover(request.app.state.http, iss, loop.time() + DISCOVERY_SECONDS)
        secrets = LaunchSecrets.new()
        redirect_uri = base_url(request) + "/smart/callback"
        key = store_key(secrets.state)
        payload = {"iss": iss, "issuer": client.issuer, "token_endpoint": config.token_endpoint,
                   "redirect_uri": redirect_uri, "verifier": secrets.verifier, "started": time.time()}
        ttl = request.app.state.settings.smart_launch_ttl_seconds
        try:
            await pending_of(request).put(key, seal(secrets.browser_secret, key, payload), ttl)
        except PendingUnavailable:
            raise LaunchRefused("The service cannot start a launch right now (its launch store does not answer). "
                                "Try again in a minute.", "pending_store_unavailable", 503) from None
    except LaunchRefused as exc:
        return _refusal(exc, client.frame_ancestors, step="launch", issuer=client.issuer)
    target = authorize_url(config, client, iss=iss, launch=launch, state=secrets.state,
                           challenge=secrets.challenge, redirect_uri=redirect_uri)
    resp = RedirectResponse(target, status_code=302, headers=page.headers(client.frame_ancestors))
    resp.headers.append("Set-Cookie", set_cookie_header(cookie_name(secrets.state), secrets.browser_secret, ttl))
    log.info("smart_launch_started", issuer=client.issuer, client="confidential" if client.confidential else "public")
    return resp


async def _take_launch(request: Request, state: str) -> tuple[dict, SmartClient]:
    """The pending launch of ``state`` (spent by this call) opened with this browser's cookie, and its client."""
    key = store_key(state)
    try:
        blob = await pending_of(request).take(key)
    except PendingUnavailable:
        raise LaunchRefused("The service cannot finish the launch right now (its launch store does not answer).",
                            "pending_store_unavailable", 503) from None
    if blob is None:
        raise LaunchRefused("This launch is unknown, was used already, or has expired.", "state_unknown")
    secret = request.cookies.get(cookie_name(state))
    if not secret:
        raise LaunchRefused("This launch did not start in this browser (its cookie is missing; a browser that blocks "
                            "cookies for this site cannot open the timeline).", "cookie_missing")
    payload = unseal(secret, key, blob)
    if payload is None:
        raise LaunchRefused("This launch did not start in this browser.", "cookie_mismatch")
    client = request.app.state.smart_clients.for_issuer(payload.get("issuer"))
    if client is None or client.match_length(str(payload.get("iss"))) == 0:
        raise LaunchRefused("This EHR is no longer allowed to open the timeline.", "iss_not_allowed", 403)
    return payload, client


async def finish(request: Request) -> Response:
    started = time.perf_counter()
    clients: SmartClients = request.app.state.smart_clients
    ancestors = clients.all_frame_ancestors()
    issuer = None
    state = request.query_params.get("state") or ""
    cookie = cookie_name(state) if state and len(state) <= MAX_PARAM else None
    try:
        if not state or len(state) > MAX_PARAM:
            raise LaunchRefused("The EHR's answer has no valid state, so it cannot be matched to a launch.",
                                "state_missing")
        payload, client = await _take_launch(request, state)
        ancestors, issuer = client.frame_ancestors, client.issuer
        error = _param(request, "error")
        if error is not None:
            shown = error if error.isascii() and error.replace("_", "").isalnum() and len(error) < 40 else "error"
            raise LaunchRefused(f"The EHR did not authorise the timeline ({shown}).", "authorization_denied", 403)
        code = _param(request, "code")
        if code is None:
            raise LaunchRefused("The EHR's answer has no authorization code.", "code_missing")
        loop = asyncio.get_running_loop()
        token = await exchange_code(request.app.state.http, payload["token_endpoint"], client, code=code,
                                    verifier=payload["verifier"], redirect_uri=payload["redirect_uri"],
                                    deadline=loop.time() + TOKEN_SECONDS)
        from cds_service.timeline.service import timeline_html

        try:
            html, counts = await timeline_html(request.app, payload["iss"], token)
        except Exception as exc:  # noqa: BLE001 - a bug must still give the clinician a page that says so
            log.error("timeline_failed", issuer=issuer, error=type(exc).__name__, exc_info=True)
            raise LaunchRefused("The timeline could not be drawn because of an internal error; it has been logged "
                                "for the service team. The chart in the EHR is unaffected.", "timeline_failed",
                                500) from None
    except LaunchRefused as exc:
        return _refusal(exc, ancestors, step="callback", issuer=issuer, cookie=cookie)
    resp = HTMLResponse(html, headers=page.headers(ancestors))
    if cookie:
        resp.headers.append("Set-Cookie", clear_cookie_header(cookie))
    log.info("timeline_shown", issuer=issuer, ms=round((time.perf_counter() - started) * 1000, 1), **counts)
    return resp
