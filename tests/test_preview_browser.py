"""The card preview page in a real browser: headless Chromium (Debian's) driven by Playwright.

The real service runs under uvicorn in a thread on a free loopback port. Skipped when no Chromium
executable exists (set CDS_TEST_CHROMIUM to point at one) or the playwright package is missing.
Never run ``playwright install`` here: it downloads a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for candidate in (os.environ.get("CDS_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("no Chromium executable (apt-get install chromium, or set CDS_TEST_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from cds_service.models import (  # noqa: E402
    RULE_ID_EXTENSION,
    Action,
    Card,
    Link,
    OverrideReason,
    Source,
    Suggestion,
    WireCard,
)
from cds_service.preview import fixtures as fixture_files  # noqa: E402

# An IVIG order in a patient on haemodialysis: one critical, one warning and three info cards expected.
PREFERRED_FIXTURE = "20-ivig-renal-dialysis-critical"
# An unrelated order (amoxicillin): no cards, whatever the engine.
NO_CARDS_FIXTURE = "36-neg-unrelated-antibiotic-in-active-ns"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    import uvicorn

    from cds_service.app import create_app
    from cds_service.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), trusted_issuers={}, redis_url=None,
                        database_url=None, log_level="WARNING")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    # CSP violations and script errors surface as console errors / page errors: none are acceptable.
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(base_url + "/")
    page.problems = problems
    yield page
    context.close()


# Waits use selectors and expect(), never wait_for_function: that evaluates a string, which the page's
# CSP (no 'unsafe-eval') rightly refuses.
def _wait_for_result(page) -> str:
    page.wait_for_selector('#cards[data-state="cards"], #cards[data-state="empty"], #cards[data-state="error"]',
                           state="attached")
    return page.get_attribute("#cards", "data-state")


def _pick_fixture(page, name: str) -> None:
    page.wait_for_selector(f'#fixture option[value="{name}"]', state="attached")
    page.select_option("#fixture", name)
    sync_api.expect(page.locator("#bundle")).to_have_value(re.compile('"resourceType": "Bundle"'))


def _engine_is_placeholder() -> bool:
    from cds_service.clinical import engine

    return (engine.__doc__ or "").startswith("PLACEHOLDER")


def _fixture_with_cards() -> str:
    listed = {f["name"]: f for f in fixture_files.list_fixtures()}
    if PREFERRED_FIXTURE in listed:
        return PREFERRED_FIXTURE
    with_critical = [n for n, f in listed.items() if any(c.get("indicator") == "critical"
                                                         for c in f.get("expectedCards") or [])]
    if not with_critical:
        pytest.skip("no packaged fixture expects a critical card")
    return with_critical[0]


# --------------------------------------------------------------------------- tests
def test_page_lists_services_and_fixtures(page):
    page.wait_for_selector("#services li code")
    services = page.locator("#services code").all_inner_texts()
    from cds_service.discovery import discovery_document
    from cds_service.services import registry

    assert services == [s.id for s in discovery_document(registry()).services]
    assert "neurosarcoidosis-order-sign" in services
    expected = [f["name"] for f in fixture_files.list_fixtures()]
    if expected:
        page.wait_for_selector(f'#fixture option[value="{expected[-1]}"]', state="attached")
    names = [o for o in page.locator("#fixture option").evaluate_all("os => os.map(o => o.value)") if o]
    assert names == expected
    assert page.problems == []


def test_packaged_fixture_shows_its_expected_cards(page, tmp_path):
    name = _fixture_with_cards()
    meta = next(f for f in fixture_files.list_fixtures() if f["name"] == name)
    _pick_fixture(page, name)
    # the fixture's hook and order are chosen for the developer
    assert page.locator(f'input[name="hook"][value="{meta["hook"]}"]').is_checked()
    assert page.input_value("#order") == meta["order"]
    page.click("#evaluate")
    state = _wait_for_result(page)
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)

    expected = fixture_files.expected_cards(fixture_files.expected(name))
    if _engine_is_placeholder():
        assert state == "empty"
        assert page.locator(".no-cards").inner_text().startswith("No cards")
    else:
        assert state == "cards"
        articles = page.locator("#cards article.card")
        shown = sorted(zip(articles.evaluate_all("as => as.map(a => a.dataset.ruleId)"),
                           articles.evaluate_all("as => as.map(a => a.dataset.indicator)"), strict=True))
        assert shown == sorted((c["rule_id"], c["indicator"]) for c in expected)
        # sorted as a sidebar shows them: critical first, then warning, then info
        order = {"critical": 0, "warning": 1, "info": 2}
        indicators = articles.evaluate_all("as => as.map(a => a.dataset.indicator)")
        assert indicators == sorted(indicators, key=order.__getitem__)
        critical = page.locator("article.card-critical").first
        assert critical.locator(".badge").inner_text().lower() == "critical"
        assert critical.evaluate("a => getComputedStyle(a).borderLeftColor") == "rgb(179, 38, 30)"
    # the raw request the EHR would send is one click away
    page.click("text=CDS Hooks request (what the EHR would send)")
    request_text = page.inner_text("#request-json")
    assert '"hook": "' + meta["hook"] + '"' in request_text and meta["order"] in request_text
    assert page.problems == []


def test_fixture_without_cards_shows_the_no_cards_state(page, tmp_path):
    if NO_CARDS_FIXTURE not in {f["name"] for f in fixture_files.list_fixtures()}:
        pytest.skip(f"fixture {NO_CARDS_FIXTURE} is not packaged")
    _pick_fixture(page, NO_CARDS_FIXTURE)
    page.click("#evaluate")
    assert _wait_for_result(page) == "empty"
    assert "No cards" in page.inner_text("#cards")
    assert page.inner_text("#status") == "No cards returned."
    assert page.locator("#raw").is_visible()
    page.screenshot(path=str(tmp_path / "no-cards.png"), full_page=True)


SUBJECT = {"reference": "Patient/p1"}
PASTED = {
    "resourceType": "Bundle", "type": "collection", "timestamp": "2026-01-01T09:00:00Z",
    "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}},
        {"resource": {"resourceType": "MedicationRequest", "id": "abx-1", "status": "draft", "intent": "order",
                      "subject": SUBJECT, "medicationCodeableConcept": {"text": "amoxicillin 500 mg"}}},
        {"resource": {"resourceType": "MedicationRequest", "id": "abx-2", "status": "draft", "intent": "order",
                      "subject": SUBJECT, "medicationCodeableConcept": {"text": "doxycycline 100 mg"}}},
    ],
}


def test_pasted_bundle_offers_its_draft_orders(page):
    import json

    page.fill("#bundle", json.dumps(PASTED))
    page.wait_for_selector('#order option[value="MedicationRequest/abx-2"]', state="attached")
    labels = page.locator("#order option").all_inner_texts()
    assert labels == ["Every draft order in the bundle", "MedicationRequest/abx-1 — amoxicillin 500 mg",
                      "MedicationRequest/abx-2 — doxycycline 100 mg"]
    page.select_option("#order", "MedicationRequest/abx-2")
    page.check('input[name="hook"][value="order-sign"]')
    page.click("#evaluate")
    assert _wait_for_result(page) == "empty"
    request_text = page.locator("#request-json").text_content()
    assert '"hook": "order-sign"' in request_text and "selections" not in request_text


def test_bad_bundle_shows_the_servers_reason(page):
    import copy
    import json

    bundle = copy.deepcopy(PASTED)
    bundle["entry"][1]["resource"]["authoredOn"] = "last Tuesday"
    page.fill("#bundle", json.dumps(bundle))
    page.click("#evaluate")
    assert _wait_for_result(page) == "error"
    alert = page.locator("#error[role=alert]")
    assert alert.is_visible()
    assert "Bundle.entry[1].resource (MedicationRequest/abx-1)" in alert.inner_text()
    assert "authoredOn" in alert.inner_text()
    page.fill("#bundle", "{ not json")
    page.click("#evaluate")
    sync_api.expect(alert).to_contain_text("not valid JSON")


HOSTILE_DETAIL = (
    "Haemodialysis: **eGFR 8**. Prefer a sucrose-free product.\n\n"
    "<script>window.__pwned = 'script'</script>\n\n"
    '<img src="x" onerror="window.__pwned = \'img\'">\n\n'
    "[do not click](javascript:window.__pwned='link') · [ERS 2021](https://example.org/ers)"
)


def _stub_cards() -> list[Card]:
    return [
        Card(summary="Immune globulin: dose 2 g/kg = 148 g over 2-5 days", indicator="info",
             detail="Weight **74 kg** (2026-11-20).", source=Source(label="Neurosarcoidosis CDS"),
             extension={RULE_ID_EXTENSION: "ivig.dose"}),
        Card(summary="IVIG in a patient on haemodialysis: high risk of acute kidney injury", indicator="critical",
             detail=HOSTILE_DETAIL, source=Source(label="FDA boxed warning", url="https://example.org/label"),
             links=[Link(label="Label", url="https://example.org/label"),
                    Link(label="Trap", url="javascript:window.__pwned='card-link'")],
             suggestions=[Suggestion(label="Cancel the IVIG order", isRecommended=True,
                                     actions=[Action(type="delete", description="Remove the draft IVIG order",
                                                     resourceId="MedicationRequest/ivig-order-1")])],
             selectionBehavior="at-most-one",
             overrideReasons=[OverrideReason(code="benefit", system="https://example.org/override",
                                             display="Benefit outweighs risk")],
             extension={RULE_ID_EXTENSION: "ivig.safety.renal",
                        "org.neurosarcoidosis-cds.evidence": {"level": "Boxed warning", "citation": "IVIG label",
                                                              "url": "https://example.org/label"}}),
        Card(summary="Relapse on prednisone: consider methotrexate <b>now</b>", indicator="warning",
             source=Source(label="ERS 2021"), extension={RULE_ID_EXTENSION: "stage.s3r-gc-refractory"}),
    ]


def test_cards_render_like_an_ehr_sidebar_and_card_text_stays_inert(page, monkeypatch, tmp_path):
    import json

    from cds_service.clinical import engine

    class Result:
        wire_cards = [WireCard.of(c) for c in _stub_cards()]

    monkeypatch.setattr(engine, "evaluate", lambda record, hook, **kw: Result())
    page.fill("#bundle", json.dumps(PASTED))
    page.click("#evaluate")
    assert _wait_for_result(page) == "cards"
    page.screenshot(path=str(tmp_path / "cards.png"), full_page=True)

    articles = page.locator("#cards article.card")
    assert articles.evaluate_all("as => as.map(a => a.dataset.indicator)") == ["critical", "warning", "info"]
    assert page.locator(".badge").all_inner_texts() == ["CRITICAL", "WARNING", "INFO"]
    colours = articles.evaluate_all("as => as.map(a => getComputedStyle(a).borderLeftColor)")
    assert colours == ["rgb(179, 38, 30)", "rgb(227, 155, 27)", "rgb(31, 79, 168)"]
    assert page.inner_text("#status") == "3 cards (1 critical, 1 warning, 1 info)."

    critical = articles.nth(0)
    assert critical.locator(".detail strong").inner_text() == "eGFR 8"
    assert critical.locator(".suggestion-label").inner_text() == "Cancel the IVIG order"
    text = critical.text_content()  # (inner_text would report the CSS-uppercased headings)
    assert "Recommended" in text and "choose at most one" in text and "Remove the draft IVIG order" in text
    assert critical.locator(".chips li").all_inner_texts() == ["Benefit outweighs risk"]
    assert critical.locator(".rule-id").inner_text() == "ivig.safety.renal"
    assert "Boxed warning" in critical.locator(".evidence").inner_text()
    # markup in a summary is text, not HTML
    assert articles.nth(1).locator("h3").inner_text() == "Relapse on prednisone: consider methotrexate <b>now</b>"

    # nothing from the card ran or became a live element; every link is http(s) and opens safely
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#cards script, #cards img, #cards iframe").count() == 0
    hrefs = page.locator("#cards a[href]").evaluate_all("as => as.map(a => [a.href, a.rel, a.target])")
    assert hrefs and all(h.startswith("https://") and rel == "noopener noreferrer" and target == "_blank"
                         for h, rel, target in hrefs)
    assert "Trap" not in page.inner_text("#cards")
    assert "<script>" in critical.locator(".detail").inner_text()  # shown as text
    assert page.problems == []


def test_page_is_served_with_a_csp_the_browser_enforces(page, base_url):
    response = page.goto(base_url + "/preview")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # an inline script injected into the page is refused by the browser
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
                             document.body.appendChild(s); }""")
    assert page.evaluate("window.__inline") is None
    assert any("Content Security Policy" in p for p in page.problems)


# --------------------------------------------------------------------------- patient-view, stale cards, races
def _request_json(page) -> dict:
    import json

    return json.loads(page.locator("#request-json").text_content())


def test_patient_view_can_be_tried_in_the_preview(page):
    _pick_fixture(page, PREFERRED_FIXTURE)
    page.check('input[name="hook"][value="patient-view"]')
    assert page.locator("#order").is_disabled()  # patient-view places no order
    assert page.locator("#hook-hint").is_visible()
    page.click("#evaluate")
    state = _wait_for_result(page)
    request = _request_json(page)
    assert request["hook"] == "patient-view"
    assert "draftOrders" not in request["context"] and "selections" not in request["context"]
    assert request["context"]["patientId"]
    if not _engine_is_placeholder():
        assert state == "cards"
        rules = page.locator("#cards article.card").evaluate_all("as => as.map(a => a.dataset.ruleId)")
        # the chart as it stands: the IVIG order is not placed, so no IVIG safety card
        assert rules and not any(r.startswith("ivig.safety") for r in rules)
    page.check('input[name="hook"][value="order-sign"]')
    assert not page.locator("#order").is_disabled() and not page.locator("#hook-hint").is_visible()
    assert page.problems == []


def test_another_fixture_clears_the_cards_and_an_edit_dims_them(page):
    _pick_fixture(page, PREFERRED_FIXTURE)
    page.click("#evaluate")
    first = _wait_for_result(page)
    assert first in ("cards", "empty")
    # editing the bundle after the answer: the cards stay readable but are marked as not current
    page.locator("#bundle").press("End")
    page.locator("#bundle").type(" ")
    sync_api.expect(page.locator("#cards")).to_have_attribute("data-stale", "true")
    assert "press Evaluate to update" in page.inner_text("#status")
    assert page.locator("#cards").evaluate("c => getComputedStyle(c).opacity") == "0.45"
    # another patient: nothing of the previous one stays on screen
    page.select_option("#fixture", NO_CARDS_FIXTURE)
    sync_api.expect(page.locator("#cards")).to_have_attribute("data-state", "idle")
    assert page.locator("#cards > *").count() == 0
    assert page.locator("#raw").is_hidden()
    sync_api.expect(page.locator("#status")).to_have_text("Fixture loaded. Press Evaluate.")
    assert f'"fixture-{NO_CARDS_FIXTURE.split("-")[0]}"' in page.input_value("#bundle")  # the new patient's
    page.click("#evaluate")
    assert _wait_for_result(page) == "empty"
    assert page.locator("#cards").get_attribute("data-stale") is None
    assert page.problems == []


def test_evaluate_right_after_a_paste_uses_the_pasted_bundle(page):
    """The fixture's order (MedicationRequest/ivig-…) must not travel with a pasted bundle that lacks it,
    however fast Evaluate follows the paste."""
    import json

    _pick_fixture(page, PREFERRED_FIXTURE)
    assert page.input_value("#order")  # the fixture's own order is selected
    page.fill("#bundle", json.dumps(PASTED))
    page.click("#evaluate")  # at once: no wait for the order list to refresh
    assert _wait_for_result(page) == "empty", page.inner_text("#error")
    request = _request_json(page)
    assert request["context"]["selections"] == ["MedicationRequest/abx-1", "MedicationRequest/abx-2"]
    assert page.locator("#error").is_hidden()


def test_a_fixture_arriving_after_a_paste_does_not_overwrite_it(page, base_url):
    """Choose a fixture, paste before it has loaded: the pasted bundle stays.

    The fixture's request is held until the paste is done, then released, so the order of events is
    the same however loaded the machine is.
    """
    import json

    page.wait_for_selector(f'#fixture option[value="{PREFERRED_FIXTURE}"]', state="attached")
    held: list = []
    page.route(f"**/fixtures/{PREFERRED_FIXTURE}", lambda route: held.append(route))
    page.select_option("#fixture", PREFERRED_FIXTURE)
    for _ in range(200):  # the route handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(25)
    assert held, "the fixture was never requested"
    page.fill("#bundle", json.dumps(PASTED))
    with page.expect_response(f"**/fixtures/{PREFERRED_FIXTURE}"):
        held[0].continue_()
    page.wait_for_timeout(300)  # the page's answer handler has run by now
    assert json.loads(page.input_value("#bundle")) == PASTED


def test_results_scroll_into_view_on_a_phone(browser, base_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(base_url + "/")
        _pick_fixture(page, PREFERRED_FIXTURE)
        heading = page.locator("#cards-title")
        sync_api.expect(heading).not_to_be_in_viewport()  # one column: the cards are below the form
        page.click("#evaluate")
        _wait_for_result(page)
        sync_api.expect(heading).to_be_in_viewport()
        # and an error is shown where the developer can see it too
        page.evaluate("window.scrollTo(0, 0)")
        page.fill("#bundle", "{ not json")
        page.click("#evaluate")
        sync_api.expect(page.locator("#error")).to_be_in_viewport()
    finally:
        context.close()
