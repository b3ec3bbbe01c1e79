"""The treatment timeline in Chromium: from the card in the test EHR to the drawn timeline, at top level and
inside the EHR's cross-site iframe; framing by an origin not allowed is refused; axe finds no violations.

The service runs on 127.0.0.1 and the test EHR on 127.0.0.2 (another site), each under uvicorn in a thread.
With ``CDS_UPDATE_SCREENSHOTS=1`` the screenshots of the three longitudinal fixtures are written to
``docs/`` (otherwise to a temporary folder). Never run ``playwright install`` here: it downloads a browser.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.smart_ehr import CLIENT_ID, SmartEHR
from tests.smart_support import EHR_HOST, free_port, loopback_alias_works, serving
from tests.test_preview_browser import CHROMIUM, CHROMIUM_ARGS, sync_api  # skips the module without Chromium

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not loopback_alias_works(), reason=f"cannot bind {EHR_HOST}"),
              pytest.mark.skipif(not loopback_alias_works("127.0.0.3"), reason="cannot bind 127.0.0.3")]

DOCS = Path(__file__).resolve().parent.parent / "docs"
FIXTURES = {"pt-101": ("stage.s7-refractory-all", "timeline-101.png"),
            "pt-102": ("ivig.safety.renal", "timeline-102.png"),
            "pt-103": ("stage.s6-on-anti-tnf", "timeline-103.png")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from cds_service.app import create_app
    from cds_service.config import Settings

    service_port, ehr_port = free_port("127.0.0.1"), free_port(EHR_HOST)
    service = f"http://127.0.0.1:{service_port}"
    ehr = SmartEHR(f"http://{EHR_HOST}:{ehr_port}", cds_base=service,
                   clients={CLIENT_ID: {"redirect_uris": [f"{service}/smart/callback"]}})
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), trusted_issuers={}, redis_url=None,
                        database_url=None, log_level="WARNING", smart_links_unauthenticated=True,
                        smart_preview_launcher=f"{ehr.base}/ehr/launch",
                        smart_clients={ehr.fhir: {"client_id": CLIENT_ID, "frame_ancestors": [ehr.base]}})
    with serving(ehr.app(), EHR_HOST, ehr_port), serving(create_app(settings), "127.0.0.1", service_port):
        yield ehr, service


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        # Third-party cookies off, as Chromium ships them to more and more users: in the EHR's cross-site
        # frame only a partitioned cookie survives, so the iframe test fails without `Partitioned` (checked).
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--test-third-party-cookie-phaseout"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1250})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.")
                  else route.abort())  # nothing leaves the machine
    p = context.new_page()
    yield p
    context.close()


def _card_link(page, rule: str):
    return page.locator("li.card a.smart", has_text="Open treatment timeline").filter(
        has=page.locator(f'xpath=self::a[contains(@href, "{rule}")]'))


def test_card_to_timeline_at_top_level(stack, page, tmp_path):
    ehr, _service = stack
    for patient, (rule, shot) in FIXTURES.items():
        page.goto(f"{ehr.base}/ehr?patient={patient}")
        link = _card_link(page, rule)
        assert link.count() == 1, f"{patient}: no timeline link on the {rule} card"
        link.click()
        page.wait_for_selector("h1:has-text('Treatment timeline')")
        assert page.locator("svg[role=img]").count() == 1
        assert page.locator(".focus").inner_text().startswith("Opened from the card")
        assert page.locator("table caption", has_text="Treatments").count() == 1
        folder = DOCS if os.environ.get("CDS_UPDATE_SCREENSHOTS") == "1" else tmp_path
        page.screenshot(path=str(folder / shot), full_page=False)


def test_card_to_timeline_inside_the_ehrs_cross_site_iframe(stack, page):
    ehr, service = stack
    page.goto(f"{ehr.base}/ehr?patient=pt-102&frame=1")
    _card_link(page, "ivig.safety.renal").click()
    frame = page.frame(name="app")
    assert frame is not None
    frame.wait_for_selector("h1:has-text('Treatment timeline')", timeout=20_000)
    assert frame.url.startswith(f"{service}/smart/callback")
    assert "1.15 -> 1.9 mg/dL" in frame.locator("body").inner_text()
    # the page needs no web storage (denied in a cross-site frame) and runs no script
    assert frame.locator("script").count() == 0


def test_framing_by_an_origin_not_allowed_is_refused(stack, page):
    ehr, service = stack
    launch = f"{ehr.base}/ehr/launch?app={service}/smart/launch&patient=pt-102&appContext=ivig.safety.renal"

    async def framer(request):
        return HTMLResponse(f'<!doctype html><title>not an EHR</title><iframe name="app" src="{launch}" '
                            f'width="800" height="600"></iframe>')

    port = free_port("127.0.0.3")
    with serving(Starlette(routes=[Route("/", framer)]), "127.0.0.3", port):
        blocked: list[str] = []
        page.on("console", lambda msg: blocked.append(msg.text) if "frame-ancestors" in msg.text else None)
        with page.expect_response(lambda r: "/smart/callback" in r.url) as callback:
            page.goto(f"http://127.0.0.3:{port}/")
        assert callback.value.status == 200  # the service answered; the browser refuses to show it here
        page.wait_for_timeout(500)
        frame = page.frame(name="app")
        text = frame.evaluate("() => document.body ? document.body.innerText : ''") if frame else ""
        assert "Treatment timeline" not in text
        assert blocked, "Chromium did not report the frame-ancestors refusal"


def test_axe_finds_no_violations(stack, page):
    from axe_playwright_python.sync_playwright import Axe

    ehr, _service = stack
    page.goto(f"{ehr.base}/ehr?patient=pt-102")
    _card_link(page, "ivig.safety.renal").click()
    page.wait_for_selector("h1:has-text('Treatment timeline')")
    for width in (1280, 700):  # a full window, and a narrow EHR frame (the picture then scrolls sideways)
        page.set_viewport_size({"width": width, "height": 1000})
        results = Axe().run(page)
        assert results.violations_count == 0, f"{width} px: {results.generate_report()}"


def test_the_sandbox_way_of_launching(stack, page):
    """As the CDS Hooks sandbox does it: ask the FHIR server for a launch id, then open the app in a new tab."""
    import httpx

    ehr, service = stack
    answer = httpx.post(f"{ehr.fhir}/_services/smart/Launch", trust_env=False, json={
        "launchUrl": f"{service}/smart/launch",
        "parameters": {"patient": "pt-103", "smart_messaging_origin": "https://sandbox.cds-hooks.org",
                       "appContext": "stage.s6-on-anti-tnf"}})
    launch_id = answer.json()["launch_id"]
    page.goto(f"{service}/smart/launch?launch={launch_id}&iss={ehr.fhir}")
    page.wait_for_selector("h1:has-text('Treatment timeline')")
    assert "Treatment ladder: S6 on anti tnf" in page.locator(".focus").inner_text()


def test_from_the_card_preview_page(stack, page):
    """The preview page's smart link goes through the development launcher (the test EHR's) to the timeline."""
    import re

    _ehr, service = stack
    page.goto(f"{service}/")
    page.wait_for_selector('#fixture option[value="19-ivig-renal-egfr-48"]', state="attached")
    page.select_option("#fixture", "19-ivig-renal-egfr-48")
    sync_api.expect(page.locator("#bundle")).to_have_value(re.compile('"resourceType": "Bundle"'))
    page.click("#evaluate")
    page.wait_for_selector('#cards[data-state="cards"]', state="attached")
    link = page.locator("a", has_text="Open treatment timeline (SMART app, via the launcher)").first
    with page.context.expect_page() as opened:
        link.click()
    timeline = opened.value
    timeline.wait_for_selector("h1:has-text('Treatment timeline')")
    assert timeline.url.startswith(f"{service}/smart/callback")
    assert timeline.locator(".focus").count() == 1
